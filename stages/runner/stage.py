"""One run of a DVC stage in this process, and what every stage of a kind does around its work.

A stage module is ``run(stage) -> StageResult``: its config, its inputs, the per-batch work, its
outputs. The :class:`Stage` it receives owns the rest:

- its params file, read once, and its process group and device (joined on first use;
  the CPU for a ``cpu_only`` stage, see :class:`stages.stage_list.StageSpec`);
- for per-image stages, :meth:`Stage.sharded`: the staging folder, the store writer, the
  resuming note, this rank's shards in batches, the progress bar, and the commit;
- for training stages, :meth:`Stage.training`: the staging folder its epoch checkpoints go
  to, the resuming note, and removing the folder once the outputs are written.

The CLI (`stages/cli.py`) records the returned :class:`StageResult` as the stage's throughput.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.core.progress import progress_bar
from stages.runner.outputs import echo
from stages.runner.params import StageParams
from stages.runner.spec import StageSpec
from stages.runner.staging import finish, resuming_note, staging_folder

if TYPE_CHECKING:
    import torch
    from tqdm import tqdm

    from pipeline.core.artifacts import ArtifactWriter
    from pipeline.core.distributed import Group

T = TypeVar("T")


@dataclass
class ShardedJob:
    """This rank's share of a per-image store being written: ``out`` is the writer."""

    name: str
    out: ArtifactWriter
    group: Group
    _bar: tqdm | None = field(default=None, repr=False)

    @property
    def bar(self) -> tqdm:
        """The stage's progress bar, counting this rank's rows (created on first use)."""
        if self._bar is None:
            self._bar = self.progress(sum(len(self.out.rows(shard)) for shard in self.shards()), "img")
        return self._bar

    def progress(self, total: int, unit: str) -> tqdm:
        """A progress bar of another unit than the row (e.g. maps times scales); call before :attr:`bar`."""
        self._bar = progress_bar(total, desc=self.name, unit=unit)
        return self._bar

    def shards(self) -> list[int]:
        """This rank's shards that an interrupted run did not finish."""
        return self.out.my_shards()

    def batches(self, size: int, advance: bool = True) -> Iterator[range]:
        """Rows of this rank's shards in batches of at most ``size``, never across a shard, so a
        batch, and each float it yields, is the same whichever rank computes the shard. With
        ``advance`` the bar counts each batch's rows once its work is done."""
        for shard in self.shards():
            rows = self.out.rows(shard)
            for start in range(rows.start, rows.stop, size):
                batch = range(start, min(start + size, rows.stop))
                yield batch
                if advance:
                    self.bar.update(len(batch))


class Stage:
    """A DVC stage running in this process: see the module docstring."""

    def __init__(self, spec: StageSpec, params_file: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.params = StageParams(params_file)
        self._joined: tuple[Group, torch.device] | None = None

    @property
    def source(self) -> str:
        """The params file's name, for messages."""
        return self.params.source

    def section(self, name: str, cls: type[T]) -> T:
        return self.params.section(name, cls)

    def join(self) -> tuple[Group, torch.device]:
        """This process's rank group and its device, joined once."""
        if self._joined is None:
            self._joined = self.params.join(cpu_only=self.spec.cpu_only)
        return self._joined

    @property
    def group(self) -> Group:
        return self.join()[0]

    @property
    def device(self) -> torch.device:
        return self.join()[1]

    def say(self, message: str) -> None:
        """A line on stderr, from rank 0 only, prefixed with the stage's name."""
        if self._joined is None or self.group.is_main:
            echo(f"{self.name}: {message}")

    @contextmanager
    def sharded(self, output: Path, kind: str, ids: Sequence[str], attrs: dict[str, Any]) -> Iterator[ShardedJob]:
        """Write the per-image store ``output`` across this stage's ranks, resumably: yields the
        job; when the block ends the store is committed, the staging folder removed and the
        group left."""
        from pipeline.core.artifacts import ArtifactWriter

        group = self.group
        staging = staging_folder(self.name, self.params, group)
        work = staging and staging / Path(output).name
        with ArtifactWriter(output, kind, ids, attrs, self.params.shard_size(), work=work, group=group) as out:
            resuming_note(self.name, len(out.done_before), out.shard_count, "shards", group)
            job = ShardedJob(self.name, out, group)
            yield job
            if job._bar is not None:
                job._bar.close()
        finish(staging, group)

    @contextmanager
    def training(self, epochs: int) -> Iterator[Path | None]:
        """Yields the folder the epoch checkpoints go to (None outside a DVC project), after
        saying how many epochs a rerun keeps. Write the outputs inside the block; at its end the
        folder is removed and the group left."""
        from pipeline.core.trainer import last_checkpoint

        group = self.group
        staging = staging_folder(self.name, self.params, group)
        resuming_note(self.name, last_checkpoint(staging)[0], epochs, "epochs", group)
        yield staging
        finish(staging, group)

    def done(self) -> None:
        """Leave the process group of a stage that used one without a store or checkpoints."""
        if self._joined is not None:
            finish(None, self.group)
