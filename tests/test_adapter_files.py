import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

import m2kt.adapter_files as adapter_files
from m2kt.adapter_files import CONFIG_FILE, WEIGHTS_FILE, load_adapter_dir, save_adapter_dir
from m2kt.errors import AdapterError, UsageError

CONFIG = {"kind": "linear", "d_in": 4, "d_out": 3, "note": "ünïcode"}


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "W": torch.randn(4, 3, generator=g),
        "b": torch.randn(3, generator=g).half(),
        "c": torch.randn(2, generator=g).bfloat16(),
    }


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _siblings(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.parent.iterdir())


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    tensors = _tensors()
    save_adapter_dir(target, CONFIG, tensors, {"report.md": b"# report\n"})
    config, loaded = load_adapter_dir(target)
    assert config == CONFIG
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name].view(torch.uint8), tensor.view(torch.uint8))
    assert (target / "report.md").read_bytes() == b"# report\n"
    assert _siblings(target) == ["adapter"]


def test_save_replaces_an_existing_directory_whole(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    save_adapter_dir(target, CONFIG, _tensors(0), {"old.txt": b"old"})
    save_adapter_dir(target, CONFIG | {"d_out": 5}, _tensors(1))
    config, loaded = load_adapter_dir(target)
    assert config["d_out"] == 5
    assert torch.equal(loaded["W"], _tensors(1)["W"])
    assert not (target / "old.txt").exists()
    assert _siblings(target) == ["adapter"]


def test_failed_save_leaves_the_previous_directory_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "adapter"
    save_adapter_dir(target, CONFIG, _tensors(0))
    before = _snapshot(target)
    real_write = adapter_files._write_file

    def failing_write(path: Path, data: bytes) -> None:
        if path.name == WEIGHTS_FILE:
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(adapter_files, "_write_file", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_adapter_dir(target, CONFIG | {"d_out": 5}, _tensors(1))
    assert _snapshot(target) == before
    assert _siblings(target) == ["adapter"]


def test_a_crash_between_the_renames_is_recovered(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    save_adapter_dir(target, CONFIG, _tensors(0))
    before = _snapshot(target)
    os.rename(target, tmp_path / ".adapter.m2kt-old")  # as if the process died mid-swap
    config, _ = load_adapter_dir(target)  # readers see the old complete version
    assert config == CONFIG
    save_adapter_dir(target, CONFIG | {"d_out": 5}, _tensors(1))
    assert load_adapter_dir(target)[0]["d_out"] == 5
    assert _siblings(target) == ["adapter"]
    assert before != _snapshot(target)


def test_a_finished_saves_leftover_is_removed(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    save_adapter_dir(target, CONFIG, _tensors(0))
    (tmp_path / ".adapter.m2kt-old").mkdir()
    stale = tmp_path / ".adapter.m2kt-new-abc"
    stale.mkdir()
    os.utime(stale, (0, 0))
    fresh = tmp_path / ".adapter.m2kt-new-def"  # perhaps another save still building
    fresh.mkdir()
    save_adapter_dir(target, CONFIG, _tensors(1))
    assert _siblings(target) == [".adapter.m2kt-new-def", "adapter"]


def test_save_refuses_bad_input_before_touching_disk(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with pytest.raises(UsageError, match="JSON"):
        save_adapter_dir(target, {"x": float("nan")}, _tensors())
    with pytest.raises(AdapterError, match="NaN"):
        save_adapter_dir(target, CONFIG, {"W": torch.tensor([float("nan")])})
    with pytest.raises(AdapterError, match="int64"):
        save_adapter_dir(target, CONFIG, {"W": torch.tensor([1])})
    for name in ("../escape", CONFIG_FILE, "", "a/b"):
        with pytest.raises(UsageError, match="extra file name"):
            save_adapter_dir(target, CONFIG, _tensors(), {name: b""})
    assert not tmp_path.joinpath("adapter").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    target = tmp_path / "adapter"
    save_adapter_dir(target, CONFIG, _tensors())
    return target


def test_load_rejects_missing_directory_and_files(saved: Path) -> None:
    with pytest.raises(AdapterError, match="does not exist"):
        load_adapter_dir(saved.parent / "nowhere")
    with pytest.raises(AdapterError, match="is a file"):
        load_adapter_dir(saved / CONFIG_FILE)
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(AdapterError, match=f"no {WEIGHTS_FILE}"):
        load_adapter_dir(saved)
    (saved / CONFIG_FILE).unlink()
    with pytest.raises(AdapterError, match=f"no {CONFIG_FILE}"):
        load_adapter_dir(saved)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"kind": "linear",', "not valid JSON"),
        ('{"a": 1, "a": 2}', "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
        ("[1, 2]", "holds an array, not a JSON object"),
        ("\xff", "not valid JSON"),
    ],
)
def test_load_rejects_bad_config(saved: Path, text: str, message: str) -> None:
    (saved / CONFIG_FILE).write_bytes(text.encode("latin-1"))
    with pytest.raises(AdapterError, match=message) as caught:
        load_adapter_dir(saved)
    assert "save the adapter again" in caught.value.hint


def test_load_rejects_truncated_weights(saved: Path) -> None:
    data = (saved / WEIGHTS_FILE).read_bytes()
    for cut in (4, len(data) // 2, len(data) - 1):
        (saved / WEIGHTS_FILE).write_bytes(data[:cut])
        with pytest.raises(AdapterError, match="not a valid safetensors file"):
            load_adapter_dir(saved)


def test_load_rejects_nan_and_non_float_tensors(saved: Path) -> None:
    (saved / WEIGHTS_FILE).write_bytes(save_safetensors({"W": torch.tensor([1.0, float("nan")])}))
    with pytest.raises(AdapterError, match="tensor W .* NaN"):
        load_adapter_dir(saved)
    (saved / WEIGHTS_FILE).write_bytes(save_safetensors({"W": torch.tensor([1, 2])}))
    with pytest.raises(AdapterError, match="tensor W .* torch.int64"):
        load_adapter_dir(saved)


def test_load_checks_the_size_before_reading(saved: Path) -> None:
    size = (saved / WEIGHTS_FILE).stat().st_size
    with pytest.raises(AdapterError, match=f"{size} bytes, over the limit of {size - 1}") as caught:
        load_adapter_dir(saved, max_bytes=size - 1)
    assert "max_bytes" in caught.value.hint
    assert load_adapter_dir(saved, max_bytes=size)[1].keys() == _tensors().keys()
    # Over the default limit of 2 GiB: refused at once, not after reading 2 GiB.
    with open(saved / WEIGHTS_FILE, "r+b") as handle:
        handle.truncate(3 * 2**31)  # sparse: costs no disk
    with pytest.raises(AdapterError, match="over the limit"):
        load_adapter_dir(saved)


def test_config_file_is_readable_json(saved: Path) -> None:
    assert json.loads((saved / CONFIG_FILE).read_text("utf-8")) == CONFIG


def test_a_cal_whose_weights_disagree_with_its_config_is_refused(tmp_path: Path) -> None:
    from m2kt.align import CALConfig, ConceptAlignmentLayer

    layer = ConceptAlignmentLayer(CALConfig("linear", 4, 3))
    layer.save(tmp_path / "cal")
    wrong = CALConfig("linear", 8, 3).to_dict()
    (tmp_path / "cal" / CONFIG_FILE).write_text(json.dumps(wrong))
    with pytest.raises(AdapterError, match=r"tensor W has shape \[4, 3\].*expects \[8, 3\]"):
        ConceptAlignmentLayer.load(tmp_path / "cal")
