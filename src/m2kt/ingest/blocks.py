"""Adapters inside a frozen student's blocks: LoRA on its attention and MLP projections.

The concept memory reads the frozen student from outside, linearly; a computation the student
never learned cannot be read out that way (the new-computation benchmark). This adapter changes
the computation itself: a low-rank update on every linear projection inside the blocks the
view found (Hugging Face blocks or the largest uniform `ModuleList` of a plain `nn.Module`),
made by the `peft` library so that the saved directory loads onto the Hugging Face student with
`PeftModel.from_pretrained(student, directory)` as well as with m2kt.

What is adapted: every `nn.Linear` (and Hugging Face's `Conv1D`) inside a block, which covers
a Hugging Face block's attention (query, key, value, output) and MLP projections. A PyTorch
`nn.MultiheadAttention` is left out, projections included: it reads its own weights instead of
calling its `out_proj`, so a LoRA on `out_proj` alone would silently do nothing, and peft's
adapter for the whole module adds its update into the base weights for every forward and
subtracts it again, which is not bit-exact (on the benchmark's tiny transformer the base
weights drifted after one step, and the hash check caught it). Such blocks get LoRA on their
MLP projections only.

The base weights are never written: peft wraps each projection, keeping the original module as
`base_layer`, and trains only the new `lora_A` / `lora_B` matrices (`lora_B` starts at zero, so
the adapted student starts exactly where the frozen one was). `base_weight_sha256` hashes the
base weights as they were before injection, names included, so the hash before, during and
after ingestion is comparable with the student's own `weight_sha256`. `remove()` takes the
wrappers out again and puts the original modules back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from m2kt.errors import UsageError
from m2kt.models.fingerprint import state_sha256

ADAPTER_NAME = "default"  # peft's name for a model's one adapter
_BASE = ".base_layer"


@dataclass(frozen=True)
class BlockSettings:
    """The LoRA's shape and how long and fast it trains (chosen on validation splits only)."""

    rank: int = 8
    alpha: float = 16.0
    steps: int = 200
    lr: float = 3e-3
    eval_every: int = 20
    batch: int | None = None  # probes a step (a seeded random draw); None: all of them

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or self.steps < 0 or self.lr <= 0:
            raise UsageError(
                f"block adapter settings out of range: rank {self.rank} (≥ 1), alpha "
                f"{self.alpha} (> 0), steps {self.steps} (≥ 0), lr {self.lr} (> 0)"
            )
        if self.eval_every < 1 or (self.batch is not None and self.batch < 1):
            raise UsageError(
                f"eval_every ({self.eval_every}) and batch ({self.batch}) must be at least 1"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def target_modules(model: nn.Module, blocks: Sequence[nn.Module]) -> list[str]:
    """Full names of the modules inside `blocks` that LoRA adapts, in model order."""
    inside = {id(m) for block in blocks for m in block.modules()}
    attention = {
        id(m)
        for block in blocks
        for mha in block.modules()
        if isinstance(mha, nn.MultiheadAttention)
        for m in mha.modules()
    }
    names = [
        name
        for name, module in model.named_modules()
        if id(module) in inside and id(module) not in attention and _is_projection(module)
    ]
    if not names:
        raise UsageError(
            "the student's blocks hold no linear projection or attention module to adapt",
            "use --adapter memory for this student",
        )
    return names


def _is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


class BlockAdapter:
    """LoRA layers put into a student's own modules (in place) and taken out again.

    `model` is changed in place: its forward is the adapted one until `remove()`. The adapter's
    tensors are named as peft saves them (`base_model.model.<module>.lora_A.weight`).
    """

    def __init__(
        self,
        model: nn.Module,
        targets: Sequence[str],
        settings: BlockSettings,
        *,
        seed: int = 0,
        base_name: str | None = None,
    ) -> None:
        from peft import LoraConfig, get_peft_model

        self.model = model
        self.settings = settings
        self.config = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,  # type: ignore[arg-type]
            lora_dropout=0.0,
            target_modules=list(targets),
        )
        was_training = model.training
        with torch.random.fork_rng():
            torch.manual_seed(seed)  # lora_A's initialisation
            self.peft = get_peft_model(model, self.config)  # type: ignore[arg-type]
        self.config.base_model_name_or_path = base_name  # peft set the model's own, if any
        model.train(was_training)
        self.peft.train(was_training)

    def parameters(self) -> Iterator[nn.Parameter]:
        return (p for n, p in self.model.named_parameters() if "lora_" in n)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def tensors(self) -> dict[str, torch.Tensor]:
        """The LoRA matrices under the names `PeftModel.from_pretrained` loads."""
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.peft, save_embedding_layers=False)
        return {k: v.detach().clone() for k, v in state.items()}

    def config_dict(self) -> dict[str, Any]:
        """The LoRA config as peft writes `adapter_config.json` (JSON types only)."""
        data = self.config.to_dict()
        data["target_modules"] = sorted(data["target_modules"])
        data["peft_type"] = str(getattr(data["peft_type"], "value", data["peft_type"]))
        return {k: v for k, v in data.items() if not isinstance(v, set)}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put saved LoRA matrices in; refuses names or shapes the adapter does not have."""
        from peft import set_peft_model_state_dict

        expected = self.tensors()
        if set(tensors) != set(expected):
            missing = sorted(set(expected) - set(tensors))[:3]
            extra = sorted(set(tensors) - set(expected))[:3]
            raise UsageError(
                f"the block adapter's tensors do not match its config (missing {missing}, "
                f"unexpected {extra})",
                "save the adapter again with `m2kt ingest --adapter blocks`",
            )
        for name, value in tensors.items():
            if value.shape != expected[name].shape:
                raise UsageError(
                    f"block adapter tensor {name} is {tuple(value.shape)}, the student needs "
                    f"{tuple(expected[name].shape)}"
                )
        set_peft_model_state_dict(self.peft, tensors)

    def remove(self) -> None:
        """Take every LoRA wrapper out and put the student's original modules back."""
        self.peft.unload()


def base_weight_sha256(model: nn.Module) -> str:
    """The student's `weight_sha256` computed past any LoRA wrappers: adapter tensors left out,
    `.base_layer` dropped from names, so it equals the hash taken before injection."""
    return state_sha256(
        {
            name.replace(_BASE, ""): tensor
            for name, tensor in model.state_dict().items()
            if ".lora_" not in name
        }
    )


def has_block_adapter(model: nn.Module) -> bool:
    return any(".lora_" in name for name in model.state_dict())
