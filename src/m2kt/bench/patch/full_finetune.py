"""Full fine-tuning of an encoder on a task: every weight, end to end, as a user would pay for.

The model classifies as its zero-shot head does (scaled cosine between the mean-pooled input and
the mean of its class prompts, both from the model being tuned), trained with cross-entropy on
the labelled training split. The result is saved as a Hugging Face directory, so that
`ClassNameHead.from_names` on it is the fine-tuned classifier, and `--weak-finetuned DIR` takes it.

Cost is reported as wall-clock and as a FLOP estimate: 6 · N · tokens for a training step
(forward and backward), 2 · N · tokens for a forward pass, N the parameters outside the
embedding tables (Kaplan et al., 2020).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from m2kt.atomic import atomic_write_bytes
from m2kt.models import TextEncoder, load_model
from m2kt.models.class_head import ZERO_SHOT_SCALE
from m2kt.tasks import TextClassificationTask


@dataclass(frozen=True)
class FineTuneCost:
    seconds: float
    train_tokens: int
    parameters: int
    flops: float
    epochs_run: int
    best_epoch: int
    val_accuracy: float


def fine_tune_encoder(
    model_id: str,
    task: TextClassificationTask,
    out_dir: Path,
    *,
    epochs: int = 2,
    lr: float = 3e-5,
    batch_size: int = 16,
    max_length: int = 256,
    seed: int = 0,
) -> FineTuneCost:
    """Tune every weight of `model_id` on `task.train`; write the model to `out_dir` with
    `cost.json`. Keeps the epoch with the best validation accuracy (epoch 0 = not tuned)."""
    run = _Run(model_id, task, lr, max_length, seed)
    rng = random.Random(seed)
    clock, tokens = time.perf_counter(), 0
    best = (run.val_accuracy(), 0)
    best_state = {k: v.clone() for k, v in run.model.state_dict().items()}
    for epoch in range(1, epochs + 1):
        order = list(range(len(task.train)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            tokens += run.step(order[start : start + batch_size])
        score = run.val_accuracy()
        if score > best[0]:
            best = (score, epoch)
            best_state = {k: v.clone() for k, v in run.model.state_dict().items()}
    seconds = time.perf_counter() - clock
    run.model.load_state_dict(best_state)
    flops = 6.0 * compute_parameters(run.model) * tokens
    out_dir.mkdir(parents=True, exist_ok=True)
    run.model.save_pretrained(out_dir)
    run.encoder.tokenizer.save_pretrained(out_dir)
    parameters = sum(p.numel() for p in run.model.parameters())
    cost = FineTuneCost(seconds, tokens, parameters, flops, epochs, best[1], best[0])
    atomic_write_bytes(out_dir / "cost.json", json.dumps(asdict(cost), indent=1).encode())
    return cost


def time_fine_tuning(
    model_id: str,
    task: TextClassificationTask,
    steps: int,
    *,
    epochs: int = 2,
    batch_size: int = 16,
    max_length: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """The wall-clock `fine_tune_encoder` would take, from `steps` of its training steps and
    one of its validation passes timed now: a run is epochs · ⌈N / batch⌉ steps and epochs + 1
    validation passes. For setting a cheaper method against full fine-tuning on the same
    machine under the same load, without paying for the whole run."""
    run = _Run(model_id, task, 3e-5, max_length, seed)
    order = random.Random(seed).sample(range(len(task.train)), len(task.train))
    clock = time.perf_counter()
    for i in range(steps):
        start = i * batch_size % len(order)
        run.step(order[start : start + batch_size])
    per_step = (time.perf_counter() - clock) / steps
    clock = time.perf_counter()
    run.val_accuracy()
    per_val = time.perf_counter() - clock
    run_steps = epochs * -(-len(task.train) // batch_size)
    return {
        "seconds": run_steps * per_step + (epochs + 1) * per_val,
        "steps_timed": steps,
        "seconds_per_step": per_step,
        "seconds_per_validation": per_val,
    }


class _Run:
    """One full fine-tuning: the model, its optimizer and the task's class prompts.

    The model classifies as its zero-shot head does (scaled cosine with the mean of its class
    prompts' embeddings, recomputed by the model being tuned at every step)."""

    def __init__(
        self, model_id: str, task: TextClassificationTask, lr: float, max_length: int, seed: int
    ) -> None:
        torch.manual_seed(seed)
        self.task = task
        self.encoder = load_model(model_id).encoder(max_length)
        self.model = self.encoder.model
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        self.prompts = [t.format(name) for name in task.class_names for t in task.templates]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)

    def step(self, index: list[int]) -> int:
        """One optimizer step on these training inputs; returns the tokens it read."""
        self.model.train()
        x, used = self.encoder.embed_batch([self.task.train.texts[i] for i in index])
        classes, prompt_tokens = _prototypes(self.encoder, self.prompts, len(self.task.class_names))
        logits = ZERO_SHOT_SCALE * x @ classes.T
        loss = F.cross_entropy(logits, self.task.train.labels[index])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return used + prompt_tokens

    @torch.no_grad()
    def val_accuracy(self) -> float:
        """Validation accuracy with the class prompts embedded by the model as it is now."""
        self.model.eval()
        classes, _ = _prototypes(self.encoder, self.prompts, len(self.task.class_names))
        x = self.encoder.encode(self.task.val.texts)
        return float(((x @ classes.T).argmax(dim=-1) == self.task.val.labels).float().mean())


def forward_flops(encoder: TextEncoder, texts: Sequence[str]) -> float:
    """2 · N · tokens: a forward pass of `encoder` over `texts` (truncated as it is)."""
    batch = encoder.tokenizer(list(texts), truncation=True, max_length=encoder.max_length)
    tokens = sum(len(ids) for ids in batch["input_ids"])
    return 2.0 * compute_parameters(encoder.model) * tokens


def compute_parameters(model: torch.nn.Module) -> int:
    """N of the FLOP estimates: parameters outside the embedding tables (a lookup costs none)."""
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def _prototypes(encoder: TextEncoder, prompts: list[str], classes: int) -> tuple[torch.Tensor, int]:
    embedded, tokens = encoder.embed_batch(prompts)
    return F.normalize(embedded.view(classes, -1, embedded.shape[-1]).mean(dim=1), dim=-1), tokens
