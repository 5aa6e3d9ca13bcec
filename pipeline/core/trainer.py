"""What every training loop shares past one process: data-parallel steps, mixed precision and
epoch checkpoints to resume from.

The loops (classifier, AffinityNet, segmenter) stay their own; each hands its model and
optimiser to a :class:`Trainer`, which

- wraps the model in DistributedDataParallel across the ranks of a group (SyncBatchNorm on
  CUDA; on CPU each rank's BatchNorm normalises with its own slice of the batch),
- runs the forward pass under autocast (``amp``: off, bf16, fp16 with a GradScaler),
- turns a rank's *sum* of per-element losses into its share of the global-batch mean
  (:meth:`Trainer.share_of_mean`), so that DDP's gradient average over ranks equals the
  gradient of the mean over the whole global batch, whatever the process count,
- saves, after every epoch, everything the next epoch depends on (model, optimiser,
  GradScaler, history, each rank's RNG states), and restores it on a rerun. The learning
  rate is a function of the step (:func:`lr_factor`), so the schedule needs
  no state of its own; sample order and augmentation are functions of (seed, epoch, index).
"""
from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pipeline.core.distributed import Group
from pipeline.core.files import atomic_path

Precision = Literal["off", "bf16", "fp16"]
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def lr_factor(step: int, total: int, warmup: int = 0, schedule: Literal["poly", "cosine"] = "poly", power: float = 0.9) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``: linear warm-up over
    ``warmup`` steps, then poly decay (1 - progress) ** power or cosine decay."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "poly":
        return (1 - progress) ** power
    return 0.5 * (1 + math.cos(math.pi * progress))


def rng_state() -> dict[str, Any]:
    """Every random state a training step may draw from (dropout, drop-path, numpy, python)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def last_checkpoint(folder: Path | None) -> tuple[int, Path | None]:
    """(epochs done, file) of the newest epoch checkpoint in ``folder``; (0, None) if none."""
    files = sorted(folder.glob("epoch-*.pt")) if folder is not None and folder.is_dir() else []
    return (int(files[-1].stem.split("-")[1]), files[-1]) if files else (0, None)


class Trainer:
    """One model's optimisation across the ranks of ``group``; see the module docstring.

    ``checkpoints``: the folder epoch checkpoints go to, ``epoch-NNNN.pt``, the newest only
    (rank 0 writes; every rank reads); None trains without them.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, group: Group = Group(),
                 amp: Precision = "off", checkpoints: Path | None = None) -> None:
        self.model, self.optimizer, self.device, self.group = model, optimizer, device, group
        self.amp, self.checkpoints = amp, checkpoints
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self.network: nn.Module = model
        if group.active:
            if device.type == "cuda":
                nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.network = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AMP_DTYPES[self.amp])

    def share_of_mean(self, local_sum: torch.Tensor, global_count: int | float | torch.Tensor) -> torch.Tensor:
        """This rank's loss such that DDP's average of gradients over ranks is the gradient of
        (sum over all ranks) / global_count. One process: local_sum / global_count."""
        return local_sum * (self.group.world_size / max(float(global_count), 1.0))

    def global_count(self, local_count: torch.Tensor) -> torch.Tensor:
        """Counts (e.g. labelled pixels, pairs of each kind) summed over the ranks' slices of a batch."""
        return self.group.sum(local_count.to(self.device)).cpu()

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: in train mode each rank
        updated its own with its slice of the last batch, so they differ before an evaluation."""
        if self.group.active:
            for buffer in self.model.buffers():
                torch.distributed.broadcast(buffer, 0)

    def resume(self) -> tuple[int, list[dict]]:
        """Restore the last epoch checkpoint, if there is one: (epochs done, their history)."""
        _, path = last_checkpoint(self.checkpoints)
        if path is None:
            return 0, []
        saved = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        states = saved["rng"]
        # A different process count cannot continue each rank's streams: only dropout draws differ then.
        if len(states) == self.group.world_size:
            set_rng_state(states[self.group.rank])
        return saved["epoch"], saved["history"]

    def save(self, epoch: int, history: list[dict]) -> None:
        """The checkpoint after ``epoch`` epochs (collective: every rank hands in its RNG state)."""
        if self.checkpoints is None:
            return
        states = self.group.gather(rng_state())
        if self.group.is_main:
            state = {"epoch": epoch, "history": history, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict(), "rng": states}
            _, previous = last_checkpoint(self.checkpoints)
            with atomic_path(self.checkpoints / f"epoch-{epoch:04d}.pt") as tmp:
                torch.save(state, tmp)
            if previous is not None:
                previous.unlink()
        self.group.barrier()

