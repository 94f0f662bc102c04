"""`m2kt patch train | transfer | apply` and `m2kt demo` as a user runs them."""

import json
from pathlib import Path

from m2kt.cli import main


def test_train_transfer_apply_with_signatures(tmp_path: Path, capsys) -> None:
    cache = str(tmp_path / "cache")
    assert main(["keygen", "--out", str(tmp_path), "--name", "me"]) == 0
    key, pub = str(tmp_path / "me.key"), str(tmp_path / "me.pub")
    weak, strong = str(tmp_path / "weak.m2kt"), str(tmp_path / "strong.m2kt")
    common = ["--task", "bbc", "--max-inputs", "48", "--cache", cache, "--sign", key]
    assert (
        main(["patch", "train", "--weak", "e2", "--logit-dim", "64", "--out", weak, *common]) == 0
    )
    assert "inputs seen: {'weak_pretrained': 48" in capsys.readouterr().out
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
                *common,
            ]
        )
        == 0
    )
    assert main(["verify", strong, "--key", pub]) == 0
    record = json.loads(Path(strong + ".record.json").read_text())
    assert record["step"] == "patch transfer" and record["seconds"] > 0
    assert record["inputs_seen"] == {"source": 48, "target": 48}
    assert record["settings"]["map"] == "orthogonal" and len(record["parents"]) == 1
    capsys.readouterr()
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
    from m2kt.demo import run_demo

    result = run_demo(tmp_path / "demo", tmp_path / "cache", per_split_limit=40, log=lambda _: None)
    assert result.weak_patch.is_file() and result.strong_patch.is_file()
    assert 0.0 <= result.patched_accuracy <= 1.0
    run = next(iter(result.benchmark["runs"].values()))
    assert run["inputs"]["train"] == 40
    assert result.inputs_seen["learn (on e2)"] == {"weak_pretrained": 40, "weak_finetuned": 40}
