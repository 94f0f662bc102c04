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
    torch.manual_seed(seed)
    encoder = load_model(model_id).encoder(max_length)
    model, tokenizer = encoder.model, encoder.tokenizer
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    parameters = sum(p.numel() for p in model.parameters())
    prompts = [t.format(name) for name in task.class_names for t in task.templates]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = random.Random(seed)
    clock, tokens = time.perf_counter(), 0
    best = (_val_accuracy(encoder, task, prompts), 0)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    for epoch in range(1, epochs + 1):
        model.train()
        order = list(range(len(task.train)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            texts = [task.train.texts[i] for i in index]
            x, used = encoder.embed_batch(texts)
            classes, prompt_tokens = _prototypes(encoder, prompts, len(task.class_names))
            tokens += used + prompt_tokens
            loss = F.cross_entropy(ZERO_SHOT_SCALE * x @ classes.T, task.train.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        score = _val_accuracy(encoder, task, prompts)
        if score > best[0]:
            best, best_state = (score, epoch), {k: v.clone() for k, v in model.state_dict().items()}
    seconds = time.perf_counter() - clock
    model.load_state_dict(best_state)
    flops = 6.0 * compute_parameters(model) * tokens
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    cost = FineTuneCost(seconds, tokens, parameters, flops, epochs, best[1], best[0])
    atomic_write_bytes(out_dir / "cost.json", json.dumps(asdict(cost), indent=1).encode())
    return cost


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


@torch.no_grad()
def _val_accuracy(encoder: TextEncoder, task: TextClassificationTask, prompts: list[str]) -> float:
    classes, _ = _prototypes(encoder, prompts, len(task.class_names))
    x = encoder.encode(task.val.texts)
    return float(((x @ classes.T).argmax(dim=-1) == task.val.labels).float().mean())
