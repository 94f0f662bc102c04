import pytest

from m2kt.errors import UsageError
from m2kt.tasks import load_task


@pytest.mark.parametrize(("name", "total", "classes"), [("bbc", 2125, 5), ("tweets", 6000, 3)])
def test_splits_are_fixed_disjoint_and_stratified(name: str, total: int, classes: int) -> None:
    task = load_task(name)
    again = load_task(name)
    assert len(task.class_names) == classes
    assert len(task.train) + len(task.val) + len(task.test) == total
    assert task.test.texts == again.test.texts
    assert set(task.train.texts).isdisjoint(task.test.texts)
    for split in (task.train, task.val, task.test):
        counts = split.labels.bincount(minlength=classes).float()
        assert counts.min() > 0.5 * counts.max()  # every class present, none dominant


def test_few_shot_and_limits() -> None:
    task = load_task("tweets")
    index = task.few_shot(16, seed=0)
    assert len(index) == 48 and task.train.labels[index].bincount().tolist() == [16, 16, 16]
    assert index != task.few_shot(16, seed=1)
    small = task.limited(30, ("train",))
    assert len(small.train) == 30 and len(small.test) == len(task.test)
    assert small.train.labels.bincount().tolist() == [10, 10, 10]


def test_unknown_task() -> None:
    with pytest.raises(UsageError, match="unknown task"):
        load_task("imagenet")


def test_a_class_missing_from_a_split_is_refused() -> None:
    task = load_task("tweets")
    negatives = (task.val.labels != 0).nonzero().flatten().tolist()
    with pytest.raises(UsageError, match="class 'negative' has no example in the val split"):
        type(task)(**{**task.__dict__, "val": task.val.subset(negatives)})


def test_your_own_csv_is_a_task(tmp_path) -> None:
    rows = ["text,label"] + [
        f"review number {i} was {'great' if i % 2 else 'awful'},{'good' if i % 2 else 'bad'}"
        for i in range(40)
    ]
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    task = load_task(str(path))
    assert task.class_names == ("bad", "good") and task.name == "reviews"
    assert len(task.train) + len(task.val) + len(task.test) == 40
    path.write_text("text,label\nhello,\n")
    with pytest.raises(UsageError, match="line 2: empty text or label"):
        load_task(str(path))
