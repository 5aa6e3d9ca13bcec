"""How much memory a computation needs, and batches planned to fit a budget.

A batch's peak is measured, not guessed: the computation runs once on PyTorch's ``meta`` device
(shapes and dtypes only, no arithmetic, no memory) under a dispatch mode that adds up the bytes
of every live tensor storage it creates. The figure is exact for the tensors, the same on every
machine, and takes a second for a ViT-B at 896 px. It leaves out the weights (made before the
count starts), the allocator's caching and fragmentation, and library workspaces: the budget
must leave room for those (``MemoryConfig``).

Plans are a function of shapes and the budget alone, never of the free memory of the machine
at hand: a float32 map comes out of a batch of 16 with other last bits than out of a batch of 1
(BLAS picks other kernels for other matrix shapes), so the batch split is part of the result,
and ``memory.budget_gib`` is a param of the stages whose output it can change.
"""
from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pipeline.core.config import knob
from pipeline.core.errors import InputError

GIB = 2**30


@dataclass(frozen=True)
class MemoryConfig:
    """The ``memory`` section: the tensor memory one batch may hold at its peak."""

    budget_gib: float = knob(
        "GiB of tensors a batch may hold at its peak, beyond the model's weights; the planner splits "
        "batches (per scale) to stay under it. 16 suits a 24 GB GPU (room is left for the CUDA context, "
        "the allocator's cache and workspaces). Part of the results: batch splits change float32 last bits", 0.01, 4096)

    @property
    def budget_bytes(self) -> int:
        return int(self.budget_gib * GIB)


class TensorMemory(TorchDispatchMode):
    """Counts the bytes of the tensor storages created inside the ``with`` block while they live.

    ``peak`` is the largest total seen right after an operation made its outputs (its inputs are
    still alive then). Storages are told apart by identity and let go when the last tensor on
    them dies, so views and in-place results are not counted twice.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata in self._live and self._live[ref.cdata][0].expired():  # its address was freed and reused
                    self.current -= self._live.pop(ref.cdata)[1]
                if ref.cdata not in self._live:
                    self._live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
        if self.current > self.peak:
            # Dead storages are only let go of here: until the total passes the peak, the true
            # total (without them) cannot either, and sweeping on every operation costs more
            # than the operations themselves on the meta device.
            for key in [key for key, (ref, _) in self._live.items() if ref.expired()]:
                self.current -= self._live.pop(key)[1]
            self.peak = max(self.peak, self.current)
        return out


def on_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device, for dry runs.
    Nothing is copied from the real tensors, and the model itself is left as it is."""
    tensors = list(model.parameters()) + list(model.buffers())
    memo: dict[int, Any] = {id(t): torch.empty_like(t, device="meta") for t in tensors}
    flags = {id(p): p.requires_grad for p in model.parameters()}
    meta = copy.deepcopy(model, memo)
    for module, original in zip(meta.modules(), model.modules()):
        for name, param in original._parameters.items():
            if param is not None:
                module._parameters[name] = nn.Parameter(memo[id(param)], requires_grad=flags[id(param)])
    return meta


def peak_bytes(run: Callable[[], Any]) -> int:
    """Peak bytes of tensors that ``run`` creates (call it with meta inputs for a dry run)."""
    with TensorMemory() as memory:
        run()
    return memory.peak


def largest_batch(peak_of: Callable[[int], int], wanted: int, budget: int) -> int:
    """The largest batch ≤ ``wanted`` whose measured peak fits ``budget`` (0 when not even one does).

    Peaks grow linearly with the batch (every activation carries the batch dimension): two dry
    runs give the line, and the candidate it predicts is checked with a third, stepping down while
    it does not fit.
    """
    peak_of = functools.cache(peak_of)
    one = peak_of(1)
    if one > budget:
        return 0
    if wanted == 1:
        return 1
    per_item = max(peak_of(2) - one, 1)
    batch = min(wanted, 1 + (budget - one) // per_item)
    while batch > 1 and peak_of(batch) > budget:
        batch -= 1
    return batch


def available_bytes(device: torch.device) -> int:
    """Free memory now: CUDA's free device memory, or the host's MemAvailable (Linux; else total RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_available(needed: int, device: torch.device, what: str) -> None:
    """Stop before the work when the plan's peak exceeds what the device has free now."""
    free = available_bytes(device)
    if needed > free:
        raise InputError(f"{what} needs {needed / GIB:.2f} GiB at its peak but {device} has {free / GIB:.2f} GiB free; "
                         "lower memory.budget_gib (params.yaml) or free the device")


def forward_peak(meta_model: nn.Module, batch: int, side: int, channels: int = 3) -> int:
    """Peak tensor bytes of one inference forward pass of ``batch`` square inputs (dry run)."""
    dtype = next(meta_model.parameters()).dtype
    images = torch.zeros(batch, channels, side, side, device="meta", dtype=dtype)
    with torch.no_grad():
        return peak_bytes(lambda: meta_model(images))


def forward_batch(model: nn.Module, side: int, wanted: int, budget: int, what: str) -> int:
    """The largest inference batch ≤ ``wanted`` of ``side``-px inputs that fits ``budget`` bytes."""
    meta_model = on_meta(model).eval()
    batch = largest_batch(lambda n: forward_peak(meta_model, n, side), wanted, budget)
    if batch == 0:
        raise InputError(f"{what}: one {side}×{side} px forward pass needs {forward_peak(meta_model, 1, side) / GIB:.2f} GiB "
                         f"of tensors, more than memory.budget_gib={budget / GIB:g}; raise it if the device has the room")
    return batch
