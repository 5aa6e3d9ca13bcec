"""dataset stage: index the configured dataset (VOC layout, COCO or folder + CSV) into data/dataset.zarr."""
from __future__ import annotations

from pathlib import Path

from pipeline.indexing import DatasetConfig, write_index
from pipeline.progress import progress
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import DATASET

OUTPUT = DATASET


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Decode and check every file, then index ids, split membership, image-level labels and sizes into data/dataset.zarr."""
    params = StageParams(params_file)
    config = params.section("dataset", DatasetConfig)
    summary = write_index(OUTPUT, config, progress=lambda items: progress(items, total=len(items), desc="dataset"))
    echo(f"dataset: indexed {summary['images']} images {summary['per_split']} with {summary['classes']} classes "
         f"({config.format}, {summary['masks']} with a mask) into {OUTPUT}")
    return summary["images"], "image"
