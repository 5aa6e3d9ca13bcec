"""How a stage is declared and what it reports: the typed contract between a stage module and the CLI.

A stage's module is ``stages.<name>``. Its ``run(stage)`` receives a
:class:`stages.runner.stage.Stage` and returns a :class:`StageResult`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    """One DVC stage. ``distributed``: it runs as torchrun processes when
    ``distributed.nproc_per_node`` asks for several. ``cpu_only``: it never uses a GPU, so it
    joins its group on the CPU and ``nproc_per_node: auto`` means one process."""

    name: str
    summary: str
    distributed: bool = False
    cpu_only: bool = False

    @property
    def module(self) -> str:
        return f"stages.{self.name}"


@dataclass(frozen=True)
class StageResult:
    """What a stage processed: ``count`` items of ``unit`` (e.g. 1200 "image"), for its timings record."""

    count: int
    unit: str
