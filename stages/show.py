"""show: an image beside its seed map for each present class, as one PNG (not a DVC stage)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from PIL import Image

from pipeline.core.artifacts import Artifact
from pipeline.core.errors import InputError
from pipeline.core.files import id_filename
from pipeline.data.index import DatasetIndex
from pipeline.report.figures import seed_overlay
from stages.runner.outputs import echo
from stages.runner.paths import CAMS, DATASET

# The `wsss` dispatcher imports this module to read its options: torch loads in main(), so that
# commands which never touch a tensor (synthetic, dataset, masks, summary, ...) start without it.


def main(
    image_id: str = typer.Argument(..., help="Image id, e.g. syn_000012 or 2007_000032."),
    out: Path = typer.Option(None, "--out", help="PNG to write (default: <image_id>_seeds.png)."),
) -> None:
    """Write the image followed by one seed-map overlay per present class (from data/cams.zarr)."""
    from pipeline.seeds.stored import full_resolution_seeds

    index = DatasetIndex(DATASET)
    cams = Artifact(CAMS, "cams")
    if image_id not in cams.ids:
        raise InputError(f"{CAMS} has no image '{image_id}' (first ids: {', '.join(cams.ids[:3])}); check cams.splits")
    row = cams.index_of(image_id)
    image = index.image(index.ids.index(image_id))
    seeds, labels = full_resolution_seeds(cams, row, image.shape[:2])
    panels = [image] + [seed_overlay(image, seed[None]) for seed in seeds]
    out = out or Path(f"{id_filename(image_id)}_seeds.png")
    Image.fromarray(np.concatenate(panels, axis=1)).save(out)
    names = [index.class_names[k - 1] for k in labels]
    echo(f"show: {out} (image, then {', '.join(names) or 'no class'})")
