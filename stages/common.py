"""Glue shared by stage modules: params option, atomic JSON/CSV outputs, device choice."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from pipeline.files import write_text

from stages import params as P

if TYPE_CHECKING:
    import torch

    from pipeline.distributed import Group

T = TypeVar("T")

PARAMS_OPTION = typer.Option(Path("params.yaml"), "--params", help="Parameter file to read instead of params.yaml.")


class StageParams:
    """A params file read once; a stage validates the keys it declares in dvc.yaml, and errors
    name the file (``source``)."""

    def __init__(self, path: Path) -> None:
        self.source = str(path)
        self.raw = P.load(path)

    def section(self, name: str, cls: type[T]) -> T:
        return P.section(self.raw, name, cls, self.source)

    def device(self) -> torch.device:
        """The top-level ``device`` (auto, cpu, cuda, cuda:N), resolved."""
        from pipeline.device import resolve_device  # torch only for the stages that use a device

        return resolve_device(P.value(self.raw, "device", str, self.source))

    def join(self, cpu_only: bool = False) -> tuple[Group, torch.device]:
        """This process's rank group (one process unless torchrun started several) and its device
        (the CPU for a stage that never uses a GPU, such as crf_labels)."""
        import torch

        from pipeline.distributed import DistributedConfig, join

        return join(torch.device("cpu") if cpu_only else self.device(), self.section("distributed", DistributedConfig))

    def shard_size(self) -> int:
        from pipeline.artifacts import StorageConfig

        return self.section("storage", StorageConfig).shard_size


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Sorted keys and fixed formatting so the same numbers give the same bytes."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def echo(message: str) -> None:
    typer.echo(message, err=True)
