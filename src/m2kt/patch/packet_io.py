"""Model patches as packets: the adapter's tensors plus the named class axes it acts on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from m2kt.errors import SchemaError, UsageError
from m2kt.packet import Packet, Provenance
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.config import PatchConfig

ADAPTER_NAME = "m2kt.logit-patch.v1"
_PREFIX = "patch."


@dataclass(frozen=True)
class ClassAxes:
    """The names behind each logit: task classes first, then auxiliary ones, and the prompts."""

    task_classes: tuple[str, ...]
    aux_classes: tuple[str, ...]
    templates: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [*self.task_classes, *self.aux_classes]

    def check_matches(self, task_classes: tuple[str, ...]) -> None:
        """Refuse a task whose classes differ from the patch's, naming the difference."""
        if tuple(task_classes) != self.task_classes:
            missing = sorted(set(self.task_classes) - set(task_classes))
            extra = sorted(set(task_classes) - set(self.task_classes))
            raise UsageError(
                f"the patch was made for classes {list(self.task_classes)}; these differ "
                f"(missing {missing}, extra {extra}, or another order)",
                "use the task the patch was trained on, or train a patch for this one",
            )


def patch_to_packet(
    patch: LogitPatch, axes: ClassAxes, provenance: Provenance, extra_config: dict[str, Any]
) -> Packet:
    """Package `patch`; `extra_config` records settings beyond PatchConfig (e.g. chosen λ)."""
    if len(axes.names) != patch.config.logit_dim:
        raise UsageError(
            f"{len(axes.names)} class names for a patch of width {patch.config.logit_dim}"
        )
    tensors = {_PREFIX + k: v.detach().clone() for k, v in patch.state_dict().items()}
    return Packet.create(
        kind="patch",
        provenance=provenance,
        tensors=tensors,
        patch={
            "adapter": ADAPTER_NAME,
            "task_classes": list(axes.task_classes),
            "aux_classes": list(axes.aux_classes),
            "templates": list(axes.templates),
            "config": patch.config.to_dict() | extra_config,
        },
    )


def patch_from_packet(packet: Packet) -> tuple[LogitPatch, ClassAxes]:
    """Rebuild the adapter from a (verified) patch packet."""
    spec = packet.manifest.patch
    if spec is None or packet.manifest.kind != "patch":
        raise UsageError(
            "this packet is a knowledge packet, not a model patch", "pass a patch packet"
        )
    if spec.adapter != ADAPTER_NAME:
        raise SchemaError(
            f"adapter {spec.adapter!r} is not supported (this m2kt reads {ADAPTER_NAME})"
        )
    config = PatchConfig.from_dict(dict(spec.config))
    if config.logit_dim != spec.logit_dim:
        raise SchemaError(
            f"patch config says K = {config.logit_dim}, its classes make {spec.logit_dim}"
        )
    patch = LogitPatch(config)
    state = {k.removeprefix(_PREFIX): v for k, v in packet.tensors.items()}
    expected = patch.state_dict()
    wrong = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if wrong or set(state) != set(expected):
        first = (wrong or sorted(set(state) ^ set(expected)))[0]
        raise SchemaError(f"patch tensors do not fit the adapter (first problem: {first})")
    patch.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    axes = ClassAxes(tuple(spec.task_classes), tuple(spec.aux_classes), tuple(spec.templates))
    return patch.eval(), axes
