"""The `wsss` command: one sub-command per DVC stage, plus tools (check, code-deps, show).

Stage modules are imported only when their command runs, so the dispatcher is not part of
any stage's code (see `stages.code_deps`): adding a command reruns nothing.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path

import typer

from pipeline.errors import InputError
from stages.common import PARAMS_OPTION
from stages.stage_list import STAGES

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


def _stage_command(module_name: str) -> Callable[[Path], None]:
    def command(params_file: Path = PARAMS_OPTION) -> None:
        importlib.import_module(module_name).main(params_file)

    return command


def _tool_command(module_name: str) -> Callable:
    """A tool's `main`, imported now (tools are light); its signature defines the options."""
    return importlib.import_module(module_name).main


for _name, _module, _description in STAGES:
    app.command(_name, help=_description, short_help=_description)(_friendly_errors(_stage_command(_module)))

# check imports every stage's config class (torch, timm): loaded only when it runs, like a stage.
app.command("check", help="Validate every section of params.yaml and decode every image and mask of the dataset.")(
    _friendly_errors(_stage_command("stages.check")))
app.command("code-deps", help="Write each stage's code deps (its import closure) into dvc.yaml.")(_tool_command("stages.code_deps"))


@app.command("methods")
def methods() -> None:
    """List the registered explanation methods (the values of cams.method and explain_eval.methods)."""
    from pipeline.explain import METHODS  # torch and timm only for this command

    for method in METHODS.values():
        where = "pixels, plain ViTs only" if method.pixels else "tokens"
        typer.echo(f"{method.name:<26} {method.summary} ({where})")


# Not a DVC stage: a look at the seeds of one image.
app.command("show", help="Write an image and its per-class seed overlays to a PNG.")(_friendly_errors(_tool_command("stages.show")))

if __name__ == "__main__":
    app()
