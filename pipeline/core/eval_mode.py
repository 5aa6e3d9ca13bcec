"""Eval mode for a while: inference inside a training loop, or on a model whose flags a caller owns."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.nn as nn


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
