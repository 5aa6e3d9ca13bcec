"""dataset stage: index a VOC-layout folder (real VOC2012 or the generated one) into data/dataset.zarr."""
from __future__ import annotations

from pathlib import Path

from pipeline.dataset_index import write_index
from pipeline.progress import progress
from stages import params as P
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import DATASET

OUTPUT = DATASET


def main(params_file: Path = PARAMS_OPTION) -> None:
    """Index ids, splits, image-level labels and sizes of dataset.root into data/dataset.zarr."""
    params = StageParams(params_file)
    dataset = params.section("dataset", P.DatasetParams)
    summary = write_index(OUTPUT, dataset.root, dataset.splits, dataset.use_aug, progress=lambda items: progress(items, total=len(items), desc="dataset"))
    echo(f"dataset: indexed {summary['images']} images {summary['per_split']} with {summary['classes']} classes into {OUTPUT}")
