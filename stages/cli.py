"""The `wsss` command: one sub-command per DVC stage, plus `show` for looking at seeds."""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import typer

from pipeline.errors import InputError

app = typer.Typer(
    help="vit-wsss: image-level labels to pixel-level pseudo-masks (ViT relevance -> dCRF -> AffinityNet -> random walk).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (command, module, one-line description) in pipeline order.
STAGES = [
    ("synthetic", "stages.synthetic", "Generate the built-in shapes dataset in VOC layout (data/synthetic)."),
    ("dataset", "stages.dataset", "Index a VOC-layout folder into data/dataset.zarr (ids, splits, labels, sizes)."),
    ("train_cls", "stages.train_cls", "Train the ViT multi-label classifier (data/models/classifier.pt)."),
    ("cams", "stages.cams", "Relevance seeds per present class on the token grid (data/cams.zarr)."),
    ("crf_labels", "stages.crf_labels", "Dense-CRF confident foreground/background labels (data/crf_labels.zarr)."),
    ("aff_pairs", "stages.aff_pairs", "Labels at feature resolution and pair codes within the radius (data/aff_pairs.zarr)."),
    ("train_aff", "stages.train_aff", "Train AffinityNet on the confident pairs (data/models/affinitynet.pt)."),
    ("random_walk", "stages.random_walk", "Random walk of the seeds over AffinityNet affinities (data/refined.zarr, PNGs)."),
    ("evaluate", "stages.evaluate", "mIoU of seeds, CRF labels and random-walk masks (metrics/segmentation.json)."),
    ("explain_eval", "stages.explain_eval", "Perturbation and segmentation tests of each explanation method (metrics/explainability.json)."),
    ("report", "stages.report", "Self-contained HTML report: tables, curves, example gallery (report/index.html)."),
]


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


def _register() -> None:
    for name, module_name, description in STAGES:
        module = importlib.import_module(module_name)
        app.command(name, help=f"{description}\n\n{module.main.__doc__ or ''}", short_help=description)(_friendly_errors(module.main))


_register()
# Not a DVC stage: a look at the seeds of one image.
app.command("show", help="Write an image and its per-class seed overlays to a PNG.")(_friendly_errors(importlib.import_module("stages.show").main))

if __name__ == "__main__":
    app()
