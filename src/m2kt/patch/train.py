"""Learn a patch without labels: make the pre-trained weak model behave like its fine-tuned self.

Only logits enter: the weak pre-trained model's K logits are the patch's input; the weak
fine-tuned model's C task logits, sharpened, are its target. Labels are never read here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from m2kt.errors import UsageError
from m2kt.patch.adapter import LogitPatch
from m2kt.patch.config import PatchConfig

Progress = Callable[[int, int], None]


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, config: PatchConfig
) -> torch.Tensor:
    """KL(teacher ‖ student) on task logits, teacher sharpened by `teacher_sharpening`."""
    tau, sharpen = config.temperature, config.teacher_sharpening
    target = F.softmax(teacher_logits / (tau * sharpen), dim=-1)
    log_probs = F.log_softmax(student_logits / tau, dim=-1)
    return F.kl_div(log_probs, target, reduction="batchmean") * tau**2 * sharpen


def learn_patch(
    pretrained_logits: torch.Tensor,
    finetuned_logits: torch.Tensor,
    config: PatchConfig,
    *,
    seed: int = 0,
    progress: Progress | None = None,
) -> LogitPatch:
    """Train a `LogitPatch` on unlabelled inputs seen by both weak models.

    pretrained_logits: [N, K] the weak pre-trained model's logits over task + auxiliary classes.
    finetuned_logits:  [N, C] the weak fine-tuned model's task logits on the same inputs.
    """
    n, k = pretrained_logits.shape
    if k != config.logit_dim:
        raise UsageError(f"logits have width {k}, the patch config says {config.logit_dim}")
    if finetuned_logits.shape[0] != n or finetuned_logits.shape[1] >= k:
        raise UsageError("fine-tuned logits must be [N, C] for the same N inputs, with C < K")
    classes = finetuned_logits.shape[1]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    patch = LogitPatch(config, seed=seed)
    patch.keep_orthogonal()
    optimizer = torch.optim.AdamW(
        patch.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(n / config.batch_size)
    schedule = _warmup_cosine(optimizer, steps_per_epoch * config.epochs, config.warmup_fraction)
    patch.train()
    total = steps_per_epoch * config.epochs
    for step in range(total):
        if step % steps_per_epoch == 0:
            order = torch.randperm(n, generator=generator)
        batch = order[(step % steps_per_epoch) * config.batch_size :][: config.batch_size]
        inputs = _augment(pretrained_logits[batch], config, generator)
        loss = distillation_loss(patch(inputs)[:, :classes], finetuned_logits[batch], config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, total)
    patch.freeze_rotation()
    return patch.eval()


def _augment(logits: torch.Tensor, config: PatchConfig, generator: torch.Generator) -> torch.Tensor:
    """With probability `noise_prob` per row, add Gaussian noise scaled to the row's own std."""
    if config.noise_prob == 0 or config.noise_std == 0:
        return logits
    noisy_rows = torch.rand(logits.shape[0], 1, generator=generator) < config.noise_prob
    std = logits.std(dim=-1, keepdim=True) * config.noise_std
    noise = torch.randn(logits.shape, generator=generator) * std
    return logits + noise * noisy_rows


def _warmup_cosine(
    optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(total * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
