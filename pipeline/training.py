"""Pieces every training loop shares: the learning-rate schedule and eval mode for a while."""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch.nn as nn


def lr_factor(step: int, total: int, warmup: int = 0, schedule: Literal["poly", "cosine"] = "poly", power: float = 0.9) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``: linear warm-up over
    ``warmup`` steps, then poly decay (1 - progress) ** power or cosine decay."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "poly":
        return (1 - progress) ** power
    return 0.5 * (1 + math.cos(math.pi * progress))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval semantics (no dropout, BatchNorm running statistics untouched) for the duration;
    each module's own training flag is put back afterwards, including mixed ones."""
    flags = [(module, module.training) for module in model.modules()]
    if not any(training for _, training in flags):
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
