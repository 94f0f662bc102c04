"""The adapter that puts a packet's knowledge into a frozen student's forward pass.

A *concept memory* read by the student's own pooled state: each of the packet's K concepts is a
slot in the student's space, and the student answers "which concept is this input?" with scaled
cosines between its (adapted) state and the slots. A low-rank residual on the state, starting at
zero, lets the student's representation move where the packet's traces ask it to, like a LoRA
on the pooled output. The student's weights never change: ingesting is adding this module.

Slots come from one of three sources:
- `aligned`: slot k = a blend of φ(c_k), the teacher's concept mapped by the Concept Alignment
  Layer φ, and the student's own anchor for that concept; the gate is learned. This is M2KT.
- `teacher`: the other way round. The alignment layer ψ maps the student's (adapted) state into
  the teacher's space, where the teacher's own concepts score it at the teacher's scale, as the
  teacher's head would; the logits are a learned blend of those and the student's cosines to
  its own anchors. A closed-form ψ fitted on shared texts is a regression of the teacher's
  reading of an input on the student's, so the teacher's decision rule (its head) is applied
  to an estimate of the teacher's state, per-class offsets and all; mapping the concepts into
  the student's space instead drops those offsets (tweets validation split, e1 → e2: 0.68 of
  the gap closed against 0.52 at 72 task inputs; docs/ingest.md). Its `slots()` are the
  student states ψ reads as each c_k (ridge least squares) blended with the anchors: where the
  concepts sit in the student's space, for the safety checks and L_struct.
- `free`: slots are parameters initialised at the student's own anchors; no teacher concepts.
  Knowledge distillation and supervised tuning train this same adapter, so that every method
  in a benchmark moves the same kind of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from m2kt import __version__
from m2kt.align.cal import CALConfig, ConceptAlignmentLayer
from m2kt.errors import UsageError

SlotSource = Literal["aligned", "free", "teacher"]


@dataclass(frozen=True)
class MemoryConfig:
    """Shape of a concept memory; stored beside its weights as `adapter_config.json`."""

    concepts: tuple[str, ...]
    student_width: int
    teacher_width: int | None
    slots: SlotSource = "aligned"
    residual_rank: int = 8
    cal: CALConfig | None = None

    def __post_init__(self) -> None:
        if len(self.concepts) < 2:
            raise UsageError(f"a concept memory needs 2+ concepts, got {len(self.concepts)}")
        if self.residual_rank < 0 or self.residual_rank > self.student_width:
            raise UsageError(
                f"residual rank {self.residual_rank} does not fit a student of width "
                f"{self.student_width}",
                f"choose a rank between 0 and {self.student_width}",
            )
        if self.slots == "aligned":
            if self.cal is None or self.teacher_width is None:
                raise UsageError("aligned slots need a Concept Alignment Layer and teacher width")
            if (self.cal.d_in, self.cal.d_out) != (self.teacher_width, self.student_width):
                raise UsageError(
                    f"the alignment layer maps {self.cal.d_in} → {self.cal.d_out}, but the "
                    f"teacher is {self.teacher_width} wide and the student {self.student_width}"
                )
        if self.slots == "teacher":
            if self.cal is None or self.teacher_width is None:
                raise UsageError("teacher slots need a Concept Alignment Layer and teacher width")
            if self.cal.kind == "mlp":
                raise UsageError("teacher slots need a linear or low_rank alignment layer")
            if (self.cal.d_in, self.cal.d_out) != (self.student_width, self.teacher_width):
                raise UsageError(
                    f"the alignment layer maps {self.cal.d_in} → {self.cal.d_out}, but reading "
                    f"a {self.student_width}-wide student in a {self.teacher_width}-wide "
                    "teacher's space needs the reverse"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter_type": "m2kt-concept-memory",
            "m2kt_version": __version__,
            "concepts": list(self.concepts),
            "student_width": self.student_width,
            "teacher_width": self.teacher_width,
            "slots": self.slots,
            "residual_rank": self.residual_rank,
            "cal": self.cal.to_dict() if self.cal else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryConfig:
        if data.get("adapter_type") != "m2kt-concept-memory":
            raise UsageError(
                "this adapter directory does not hold an m2kt concept memory",
                "pass a directory written by `m2kt ingest`",
            )
        try:
            cal = CALConfig.from_dict(data["cal"]) if data.get("cal") else None
            return cls(
                concepts=tuple(str(c) for c in data["concepts"]),
                student_width=int(data["student_width"]),
                teacher_width=None if data["teacher_width"] is None else int(data["teacher_width"]),
                slots=data["slots"],
                residual_rank=int(data["residual_rank"]),
                cal=cal,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"adapter_config.json is malformed: {exc}") from None


def gate_logit(gate: float) -> torch.Tensor:
    """The parameter behind a gate in [0, 1]; kept finite at the ends (a saved adapter holds
    finite values only), so gate 0 weighs the teacher by 1e-4."""
    return torch.logit(torch.tensor(float(gate)), eps=1e-4)


class ConceptMemory(nn.Module):
    """Concept slots in the student's space, read by scaled cosine, plus a low-rank residual."""

    def __init__(
        self,
        config: MemoryConfig,
        student_anchors: torch.Tensor,
        teacher_concepts: torch.Tensor | None = None,
        cal: ConceptAlignmentLayer | None = None,
        *,
        gate: float = 0.5,
        scale: float = 20.0,
        teacher_scale: float = 20.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.config = config
        k, d = len(config.concepts), config.student_width
        if tuple(student_anchors.shape) != (k, d):
            raise UsageError(
                f"student anchors are {tuple(student_anchors.shape)}, the memory expects {(k, d)}"
            )
        self.register_buffer("student_anchors", F.normalize(student_anchors.float(), dim=-1))
        self.teacher_log_scale: nn.Parameter | None = None
        if config.slots in ("aligned", "teacher"):
            if teacher_concepts is None or cal is None:
                raise UsageError("aligned slots need the teacher's concepts and an alignment layer")
            if tuple(teacher_concepts.shape) != (k, config.teacher_width):
                raise UsageError(
                    f"the packet's concepts are {tuple(teacher_concepts.shape)}, the memory "
                    f"expects {(k, config.teacher_width)}"
                )
            self.register_buffer("teacher_concepts", teacher_concepts.float().clone())
            self.cal: ConceptAlignmentLayer | None = cal
            self.gate_logit: nn.Parameter | None = nn.Parameter(gate_logit(gate))
            self.slot_offsets: nn.Parameter | None = None
            if config.slots == "teacher":
                self.teacher_log_scale = nn.Parameter(torch.log(torch.tensor(float(teacher_scale))))
        else:
            self.register_buffer("teacher_concepts", None)
            self.cal = None
            self.gate_logit = None
            self.slot_offsets = nn.Parameter(torch.zeros(k, d))
        generator = torch.Generator().manual_seed(seed)
        r = config.residual_rank
        self.down = nn.Parameter(torch.randn(d, r, generator=generator) / d**0.5)
        self.up = nn.Parameter(torch.zeros(r, d))
        self.log_scale = nn.Parameter(torch.log(torch.tensor(float(scale))))

    @property
    def anchors(self) -> torch.Tensor:
        """The student's own unit concept anchors [K, d_S] (its view before ingestion)."""
        value = self.student_anchors
        assert isinstance(value, torch.Tensor)
        return value

    def adapt(self, states: torch.Tensor) -> torch.Tensor:
        """The student's pooled states with the residual added: [N, d_S] → [N, d_S]."""
        return states + (states @ self.down) @ self.up

    @property
    def in_teacher_space(self) -> bool:
        return self.config.slots == "teacher"

    def aligned_concepts(self) -> torch.Tensor:
        """φ(c_k) for every concept [K, d_S] (for teacher slots, the state ψ maps closest to
        c_k); not for free slots."""
        if self.cal is None:
            raise UsageError("a memory with free slots has no aligned concepts")
        if self.in_teacher_space:  # the student state ψ reads as c_k (ridge least squares)
            zero = self.cal(torch.zeros(1, self.config.student_width))
            linear = self.cal(torch.eye(self.config.student_width)) - zero  # [d_S, d_T]
            gram = linear @ linear.T
            ridge = 1e-3 * torch.trace(gram) / len(gram) * torch.eye(len(gram))
            assert isinstance(self.teacher_concepts, torch.Tensor)
            wanted = F.normalize(self.teacher_concepts, dim=-1) - zero
            return torch.linalg.solve(gram + ridge, linear @ wanted.T).T
        return self.cal(self.teacher_concepts)

    def in_teacher(self, states: torch.Tensor) -> torch.Tensor:
        """ψ of the adapted student states [N, d_T], as unit vectors (what ψ was fitted on, so
        that its intercept keeps its weight); only for teacher slots."""
        if self.cal is None or not self.in_teacher_space:
            raise UsageError("only a memory with teacher slots reads states in the teacher's space")
        return self.cal(F.normalize(self.adapt(states), dim=-1))

    def slots(self) -> torch.Tensor:
        """Unit slot vectors [K, d_S]."""
        if self.cal is not None and self.gate_logit is not None:
            gate = torch.sigmoid(self.gate_logit)
            mixed = gate * F.normalize(self.aligned_concepts(), dim=-1)
            mixed = mixed + (1 - gate) * self.anchors
        else:
            assert self.slot_offsets is not None
            mixed = self.anchors + self.slot_offsets
        return F.normalize(mixed, dim=-1)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Concept logits [N, K] for pooled student states [N, d_S]."""
        adapted = F.normalize(self.adapt(states), dim=-1)
        if self.in_teacher_space:
            assert self.gate_logit is not None and self.teacher_log_scale is not None
            gate = torch.sigmoid(self.gate_logit)
            read = F.normalize(self.in_teacher(states), dim=-1)
            assert isinstance(self.teacher_concepts, torch.Tensor)
            concepts = F.normalize(self.teacher_concepts, dim=-1)
            teacher = self.teacher_log_scale.exp() * read @ concepts.T
            own = self.log_scale.exp() * adapted @ self.anchors.T
            return gate * teacher + (1 - gate) * own
        return self.log_scale.exp() * adapted @ self.slots().T

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to rebuild the memory, by name (CAL ones prefixed `cal.`)."""
        out = {
            k: v.detach().clone() for k, v in self.state_dict().items() if not k.startswith("cal.")
        }
        if self.cal is not None:
            out |= {f"cal.{k}": v for k, v in self.cal.tensors().items()}
        return out

    @classmethod
    def from_tensors(cls, config: MemoryConfig, tensors: dict[str, torch.Tensor]) -> ConceptMemory:
        """Rebuild a saved memory; names and shapes are checked against `config`."""
        cal = None
        if config.cal is not None:
            cal_tensors = {k[4:]: v for k, v in tensors.items() if k.startswith("cal.")}
            cal = ConceptAlignmentLayer.from_tensors(config.cal, cal_tensors)
        own = {k: v for k, v in tensors.items() if not k.startswith("cal.")}
        if "student_anchors" not in own:
            raise UsageError("the adapter weights lack `student_anchors`")
        memory = cls(
            config,
            own["student_anchors"],
            own.get("teacher_concepts"),
            cal,
        )
        expected = memory.state_dict()
        expected = {k: v for k, v in expected.items() if not k.startswith("cal.")}
        if set(own) != set(expected):
            raise UsageError(
                f"adapter weights hold {sorted(own)}, the config expects {sorted(expected)}"
            )
        for name, value in own.items():
            if value.shape != expected[name].shape:
                raise UsageError(
                    f"adapter tensor {name} is {tuple(value.shape)}, the config expects "
                    f"{tuple(expected[name].shape)}"
                )
        if not all(torch.isfinite(v).all() for v in own.values() if v.is_floating_point()):
            raise UsageError("the adapter weights hold NaN or infinite values")
        memory.load_state_dict(own, strict=False)
        return memory
