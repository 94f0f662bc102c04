"""`m2kt patch train | transfer | apply` and `m2kt demo` as a user runs them."""

import csv
import json
import random
from pathlib import Path

import pytest

from m2kt.cli import main
from m2kt.models.embedded import e1_directory
from m2kt.tasks import load_task

BBC = load_task("bbc")
CLASSES = ",".join(BBC.class_names)


def _bbc_rows(per_split: int) -> list[tuple[str, str]]:
    """(text, label) rows of a small, class-balanced BBC slice from all three splits."""
    small = BBC.limited(per_split)
    return [
        (text, BBC.class_names[int(label)])
        for split in (small.train, small.val, small.test)
        for text, label in zip(split.texts, split.labels, strict=True)
    ]


def _write_csv(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def bbc_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    """60 BBC articles as a user's labelled CSV (35 train, 5 validation, 20 test once split)."""
    return _write_csv(tmp_path_factory.mktemp("csv") / "news.csv", _bbc_rows(20), ("text", "label"))


def test_train_transfer_apply_with_signatures(tmp_path: Path, bbc_csv: str, capsys) -> None:
    cache = str(tmp_path / "cache")
    assert main(["keygen", "--out", str(tmp_path), "--name", "me"]) == 0
    key, pub = str(tmp_path / "me.key"), str(tmp_path / "me.pub")
    weak, strong = str(tmp_path / "weak.m2kt"), str(tmp_path / "strong.m2kt")
    common = ["--task", bbc_csv, "--max-inputs", "30", "--cache", cache, "--sign", key]
    assert (
        main(["patch", "train", "--weak", "e2", "--logit-dim", "64", "--out", weak, *common]) == 0
    )
    assert "inputs seen: {'weak_pretrained': 30" in capsys.readouterr().out
    # Loading for use verifies: an unsigned or untrusted patch is refused.
    assert main(["patch", "transfer", weak, "--to", "e1", "--out", strong, *common]) == 1
    assert "no trusted public key" in capsys.readouterr().err
    assert (
        main(
            [
                "patch",
                "transfer",
                weak,
                "--to",
                "e1",
                "--out",
                strong,
                "--key",
                pub,
                "--identity-weight",
                "1.0",
                "--fit-length",
                "32",
                *common,
            ]
        )
        == 0
    )
    # With labels, the transfer prints how the patch does against its references.
    table = capsys.readouterr().out.splitlines()[-5:]
    assert table[0].split() == ["val", "test"]
    assert [line.rsplit(None, 2)[0] for line in table[1:]] == [
        "strong zero-shot",
        "strong + patch",
        "weak fine-tuned",
        "weak + patch",
    ]
    assert main(["verify", strong, "--key", pub]) == 0
    capsys.readouterr()
    record = json.loads(Path(strong + ".record.json").read_text())
    assert record["step"] == "patch transfer" and record["seconds"] > 0
    assert record["inputs_seen"] == {"source": 30, "target": 30}
    assert record["settings"]["map"] == "orthogonal" and len(record["parents"]) == 1
    assert record["settings"]["fit_length"] == 32
    short = ["patch", "transfer", weak, "--to", "e1", "--out", strong, "--key", pub]
    assert main([*short, "--fit-length", "2", *common]) == 2
    assert "fit length 2 is too short" in capsys.readouterr().err
    assert (
        main(
            [
                "patch",
                "apply",
                strong,
                "--model",
                "e1",
                "--key",
                pub,
                "--text",
                "The striker scored twice in the cup final.",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("sport")
    assert main(["patch", "apply", strong, "--model", "e2", "--key", pub, "--text", "x"]) == 2
    assert "transfer it first" in capsys.readouterr().err
    assert main(["patch", "apply", strong, "--model", "e1", "--key", pub, "--task", "tweets"]) == 2
    assert "made for classes" in capsys.readouterr().err


def test_demo_on_a_small_slice(tmp_path: Path) -> None:
    from m2kt.recipes.patch_demo import run_demo

    result = run_demo(tmp_path / "demo", tmp_path / "cache", per_split_limit=40, log=lambda _: None)
    assert result.weak_patch.is_file() and result.strong_patch.is_file()
    assert 0.0 <= result.patched_accuracy <= 1.0
    run = next(iter(result.benchmark["runs"].values()))
    assert run["inputs"]["train"] == 40
    assert result.inputs_seen["learn (on e2)"] == {"weak_pretrained": 40, "weak_finetuned": 40}


def test_unlabelled_inputs_never_read_a_label(tmp_path: Path, monkeypatch, capsys) -> None:
    """--inputs: the same texts as a text file (no labels at all), as a CSV with true labels and
    with shuffled labels give byte-identical patches, trained and transferred."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    rows = _bbc_rows(10)
    texts = [text for text, _ in rows]
    shuffled = [label for _, label in rows]
    random.Random(0).shuffle(shuffled)
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "inputs.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    files = {
        "txt": str(tmp_path / "txt" / "inputs.txt"),
        "labelled": _write_csv(
            tmp_path / "labelled" / "inputs.csv", [(y, t) for t, y in rows], ("label", "text")
        ),
        "shuffled": _write_csv(
            tmp_path / "shuffled" / "inputs.csv",
            list(zip(texts, shuffled, strict=True)),
            ("text", "label"),
        ),
    }
    cache = ["--cache", str(tmp_path / "cache")]
    made = {}
    for name, inputs in files.items():
        common = ["--inputs", inputs, "--classes", CLASSES, "--allow-unsigned", *cache]
        weak, strong = str(tmp_path / f"{name}.weak.m2kt"), str(tmp_path / f"{name}.strong.m2kt")
        train = ["patch", "train", "--weak", "e2", "--logit-dim", "32", "--out", weak]
        teacher = ["--weak-finetuned", str(e1_directory())]
        assert main([*train, *teacher, *common[:4], *cache]) == 0
        assert main(["patch", "transfer", weak, "--to", "e1", "--out", strong, *common]) == 0
        made[name] = (Path(weak).read_bytes(), Path(strong).read_bytes())
    assert len(set(made.values())) == 1
    record = json.loads(Path(strong + ".record.json").read_text())
    assert (
        record["settings"]["selection"].startswith("unlabelled")
        and record["settings"]["labels"] == 0
        and record["settings"]["refine"].startswith("KL")
        and record["settings"]["refine_epoch"] >= 0
    )
    assert record["inputs_seen"] == {"source": 30, "target": 30}
    assert "val" not in capsys.readouterr().out  # no labels, no table
    plus = ["patch", "transfer", weak, "--to", "e1", "--out", strong, "--few-shot", "2"]
    assert main([*plus, *common]) == 2
    assert "Patch+ (--few-shot) needs labels" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--inputs needs --classes"),
        (["--classes", "a"], "two or more distinct names"),
        (["--classes", "a,,b"], "empty class name"),
        (["--classes", "a,b", "--templates", "no slot"], "exactly one {}"),
        (["--classes", "a,b", "--templates", "{} and {}"], "exactly one {}"),
    ],
)
def test_unlabelled_inputs_refused_in_one_line(tmp_path: Path, capsys, extra, message) -> None:
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("some text\n" * 20)
    argv = ["patch", "train", "--weak", "e2", "--weak-finetuned", "e1", "--inputs", str(inputs)]
    assert main([*argv, "--out", str(tmp_path / "w.m2kt"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "(hint: " in err[0]


def test_unlabelled_refusals_before_any_model_loads(tmp_path: Path, capsys) -> None:
    few = tmp_path / "few.txt"
    few.write_text("one\ntwo\n")
    many = tmp_path / "many.txt"
    many.write_text("some text\n" * 20)
    out = ["--out", str(tmp_path / "w.m2kt")]
    cases = [
        (
            ["patch", "train", "--weak", "e2", "--inputs", str(many), "--classes", "a,b"],
            "needs the fine-tuned weak model",
        ),
        (
            [
                "patch",
                "train",
                "--weak",
                "e2",
                "--weak-finetuned",
                "e1",
                "--inputs",
                str(few),
                "--classes",
                "a,b",
            ],
            "at least 10",
        ),
        (
            ["patch", "train", "--weak", "e2", "--task", "bbc", "--classes", "a,b"],
            "go with --inputs",
        ),
        (
            ["patch", "train", "--weak", "e2", "--inputs", str(tmp_path), "--classes", "a,b"],
            "not a regular file",
        ),
    ]
    for argv, message in cases:
        assert main([*argv, *out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "loading" not in err[0], err


def test_bench_patch_on_a_users_csv(tmp_path: Path, bbc_csv: str, capsys) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "patch", "--task", bbc_csv, "--pair", "e2,e1", "--logit-dim", "32"]
    assert main([*argv, "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["logit_dim"] == 32 and list(result["runs"]) == ["news e2→e1"]
    assert "| strong + patch (label-free) |" in capsys.readouterr().out
    for bad, message in (
        (["--task", str(tmp_path / "missing.csv")], "not a file"),
        (["--pair", "e2"], "two models A,B"),
        (["--logit-dim", "2"], "logit_dim ≥ 3"),
    ):
        assert main(["bench", "patch", "--out", str(out), *bad]) == 2
        assert message in capsys.readouterr().err
