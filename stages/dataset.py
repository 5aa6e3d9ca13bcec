"""dataset stage: index the configured dataset (VOC layout, COCO or folder + CSV) into data/dataset.zarr."""
from __future__ import annotations

from pipeline.core.progress import progress
from pipeline.sources.build_index import DatasetConfig, write_index
from stages.runner.paths import DATASET
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

OUTPUT = DATASET


def run(stage: Stage) -> StageResult:
    """Decode and check every file, then index ids, split membership, image-level labels and sizes into data/dataset.zarr."""
    config = stage.section("dataset", DatasetConfig)
    summary = write_index(OUTPUT, config, progress=lambda items: progress(items, total=len(items), desc="dataset"))
    stage.say(f"indexed {summary['images']} images {summary['per_split']} with {summary['classes']} classes "
         f"({config.format}, {summary['masks']} with a mask) into {OUTPUT}")
    return StageResult(summary["images"], "image")
