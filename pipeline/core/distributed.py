"""Several processes for one stage, on torch.distributed: the process group and what ranks share.

A stage runs as one process, or as N processes started by torchrun (which sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address). :func:`join` turns that environment into
a :class:`Group`: gloo on CPU, nccl on CUDA with one GPU per local rank. Per-image stages
give each rank whole shards of their output store (:func:`shares`); training stages wrap the
model in DistributedDataParallel and give each rank a slice of every global batch
(:func:`batch_share`). A failing rank raises; torchrun then stops the other ranks and exits
non-zero, so no rank waits on a collective forever. Process count and backend are hardware
choices: for per-image stages they cannot change any result (docs/scaling.md).
"""
from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

from pipeline.core.config import knob

if TYPE_CHECKING:
    import torch

# torch is imported where a collective runs, not here: stores (pipeline.core.artifacts) use Group
# in stages that never load torch.

# Environment torchrun sets for each worker; RANK alone marks a process it started.
_RANK, _WORLD, _LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"
_PR_SET_PDEATHSIG = 1  # prctl option, linux/prctl.h


@dataclass(frozen=True)
class DistributedConfig:
    """The ``distributed`` section: how many processes each torch stage runs as on this machine.

    Not a param of any stage in dvc.yaml: like the thread count, it cannot change a
    per-image stage's output, so editing it reruns nothing.
    """

    nproc_per_node: Union[Literal["auto"], int] = knob("processes per machine: auto (one per visible GPU on CUDA, 1 on CPU) or a count", 1, 1024)
    timeout_minutes: float = knob("a collective that waits longer than this fails the run (a backstop: torchrun already stops "
                                  "the other ranks when one fails)", 1.0, 1440.0)


def processes_per_node(config: DistributedConfig, device: torch.device) -> int:
    """The process count ``nproc_per_node`` names on ``device``."""
    import torch

    if config.nproc_per_node != "auto":
        return int(config.nproc_per_node)
    return max(1, torch.cuda.device_count()) if device.type == "cuda" else 1


def launched() -> bool:
    """True inside a process torchrun started (any world size)."""
    return _RANK in os.environ


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get(_RANK, 0))


def world_size() -> int:
    return int(os.environ.get(_WORLD, 1))


@dataclass(frozen=True)
class Group:
    """This process's place among the ranks of a stage; a single process is ``Group()``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (a new tensor; no gradient flows through it)."""
        total = values.detach().clone()
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(total)
        return total


def join(device: torch.device, config: DistributedConfig) -> tuple[Group, torch.device]:
    """The group this process belongs to and the device it computes on.

    Outside torchrun, or with one process, nothing is initialised. Otherwise the default
    process group is created (nccl on CUDA, gloo on CPU) and a CUDA rank takes the GPU of its
    local rank, so N processes on one machine use N GPUs.
    """
    if not launched():
        return Group(), device
    _die_with_launcher()
    if int(os.environ[_WORLD]) == 1:
        return Group(), device
    import torch
    import torch.distributed as dist

    group = Group(int(os.environ[_RANK]), int(os.environ[_WORLD]), int(os.environ.get(_LOCAL_RANK, 0)))
    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=config.timeout_minutes),
                                device_id=device if device.type == "cuda" else None)
    return group, device


def _die_with_launcher() -> None:
    """torchrun starts each rank in a session of its own, so a SIGKILL of the job's process group
    (a preemption, `kill -9 -PGID`) would leave the ranks running on, orphaned, still writing to
    the staging folder. On Linux a rank asks the kernel to kill it when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the request took effect
        os._exit(1)


def leave(group: Group) -> None:
    """Tear the process group down once every rank is done with it."""
    import torch.distributed as dist

    if group.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shares(items: Sequence[int], group: Group) -> list[int]:
    """This rank's part of ``items`` (e.g. the shards still to compute): every world_size-th, so
    ranks get near-equal counts and every rank derives the same split from the same list."""
    return list(items[group.rank :: group.world_size])


def batch_share(batch: Sequence[int], group: Group) -> list[int]:
    """This rank's contiguous slice of a global batch; slice sizes differ by at most one."""
    size, extra = divmod(len(batch), group.world_size)
    start = group.rank * size + min(group.rank, extra)
    return list(batch[start : start + size + (group.rank < extra)])


def batch_rows(count: int, batch_size: int, group: Group) -> list[int]:
    """The rows of this rank's whole batches when ``count`` rows are cut into batches of
    ``batch_size`` and the batches dealt out like shards: chunking the result by ``batch_size``
    gives back exactly those batches, so each batch is the same whatever the rank count."""
    batches = shares(range(-(-count // batch_size)), group)
    return [row for batch in batches for row in range(batch * batch_size, min((batch + 1) * batch_size, count))]
