"""The `wsss` command: one sub-command per DVC stage, plus tools (check, code-deps, show).

Stage modules are imported only when their command runs, so the dispatcher is not part of
any stage's code (see `stages.code_deps`): adding a command reruns nothing.
"""
from __future__ import annotations

from pipeline.core import numerics

numerics.pin_environment()  # first: ATen, oneMKL and oneDNN read it once, when torch loads

import functools
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer

from pipeline.core.errors import InputError
from stages.runner.outputs import write_json
from stages.runner.params import PARAMS_OPTION, StageParams
from stages.runner.paths import TIMINGS
from stages.runner.spec import StageResult, StageSpec
from stages.stage_list import STAGES
from stages.timings import write_page

app = typer.Typer(
    help="vit-wsss: image-level labels to pixel-level pseudo-masks (ViT relevance -> dCRF -> AffinityNet -> random walk).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _friendly_errors(run: Callable) -> Callable:
    """Bad input (params, data, models, stores) ends with one clear line instead of a traceback."""

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except InputError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (worker pools, torchrun ranks)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _processes(spec: StageSpec, params_file: Path) -> int:
    """How many processes `distributed.nproc_per_node` asks for this stage on this machine."""
    import torch

    from pipeline.core.distributed import DistributedConfig, processes_per_node

    params = StageParams(params_file)
    device = torch.device("cpu") if spec.cpu_only else params.device()
    return processes_per_node(params.section("distributed", DistributedConfig), device)


def _run_ranks(name: str, params_file: Path, processes: int) -> None:
    """Run the stage as ``processes`` ranks on this machine under torchrun. torchrun stops every
    rank as soon as one fails and exits non-zero; that exit code ends this command too."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "stages.cli", name, "--params", str(params_file)]
    code = subprocess.call(command)
    if code:
        typer.echo(f"error: {name} failed in one of its {processes} processes (its message is above); nothing was committed", err=True)
        raise typer.Exit(code)


def _run_here(spec: StageSpec, params_file: Path) -> StageResult:
    """The stage's ``run`` in this process (one rank of several under torchrun, or the only one)."""
    from pipeline.core.distributed import launched
    from stages.runner.stage import Stage


    run = importlib.import_module(spec.module).run
    if launched():  # torchrun's summary then names the failing rank with its error and traceback
        from torch.distributed.elastic.multiprocessing.errors import record

        run = record(run)
    return run(Stage(spec, params_file))


def _stage_command(spec: StageSpec) -> Callable[[Path], None]:
    """Run a stage and record its wall time, CPU time, peak memory and throughput in
    metrics/timings/<name>.json (or in $WSSS_TIMINGS_DIR, for runs in a temporary copy such as
    `dvc exp run --temp`). A ``distributed`` stage runs as several torchrun processes when the
    `distributed` params ask for more than one."""

    def command(params_file: Path = PARAMS_OPTION) -> None:
        from pipeline.core.distributed import launched, rank, world_size

        start, cpu_start = time.perf_counter(), _cpu_seconds()
        folder = Path(os.environ.get("WSSS_TIMINGS_DIR") or TIMINGS)
        processes = _processes(spec, params_file) if spec.distributed and not launched() else 1
        if processes > 1:
            _run_ranks(spec.name, params_file, processes)
            # Rank 0 recorded what it processed; the totals of all ranks are this process's.
            items = json.loads((folder / f"{spec.name}.json").read_text())["items"]
            result = StageResult(*items)
        else:
            result = _run_here(spec, params_file)
            if rank() != 0:
                return
        seconds = time.perf_counter() - start
        # ru_maxrss is in KiB on Linux: the largest resident set of this process or of one child.
        peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        write_json(folder / f"{spec.name}.json", {
            "stage": spec.name, "seconds": round(seconds, 2), "cpu_seconds": round(_cpu_seconds() - cpu_start, 2),
            "peak_memory_mib": round(peak / 1024, 1), "processes": processes if processes > 1 else world_size(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "items": [result.count, result.unit],
            "items_per_second": round(result.count / max(seconds, 1e-9), 2), "numerics": numerics.describe()})
        write_page(folder)

    return command


def _tool_command(module_name: str, lazy: bool = False) -> Callable:
    """A tool's `main`; its signature defines the options. Imported now (most tools are light),
    or with ``lazy`` only when it runs (check imports every stage's config class: torch, timm)."""
    if not lazy:
        return importlib.import_module(module_name).main

    def command(params_file: Path = PARAMS_OPTION) -> None:
        importlib.import_module(module_name).main(params_file)

    return command


for _spec in STAGES:
    app.command(_spec.name, help=_spec.summary, short_help=_spec.summary)(_friendly_errors(_stage_command(_spec)))

app.command("check", help="Validate every section of params.yaml and decode every image and mask of the dataset.")(
    _friendly_errors(_tool_command("stages.check", lazy=True)))
app.command("code-deps", help="Write each stage's code deps (its import closure) into dvc.yaml.")(_tool_command("stages.code_deps"))
app.command("preset", help="Lay a preset (configs/*.yaml) over params.yaml, validate every section, then write it.")(
    _friendly_errors(_tool_command("stages.preset")))


@app.command("methods")
def methods() -> None:
    """List the registered explanation methods (the values of cams.method and explain_eval.methods)."""
    from pipeline.explain import METHODS  # torch and timm only for this command

    for method in METHODS.values():
        where = "pixels, plain ViTs only" if method.pixels else "tokens"
        typer.echo(f"{method.name:<26} {method.summary} ({where})")


# Not DVC stages: a look at the seeds of one image, the trained segmenter on any images, the headline numbers.
app.command("show", help="Write an image and its per-class seed overlays to a PNG.")(_friendly_errors(_tool_command("stages.show")))
app.command("predict", help="Segment images or folders with the trained segmenter: a palette PNG and an overlay per image.")(
    _friendly_errors(_tool_command("stages.predict")))
app.command("summary", help="The headline numbers of the last run in one short table, with the file each comes from.")(
    _tool_command("stages.summary"))

if __name__ == "__main__":
    app()
