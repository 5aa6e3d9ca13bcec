"""dataset stage: index the configured dataset (VOC layout, COCO or folder + CSV) into data/dataset.zarr."""
from __future__ import annotations

from pathlib import Path

from pipeline.core.progress import progress
from pipeline.data.index import DatasetIndex
from pipeline.sources.build_index import DatasetConfig, open_source, write_index, write_mask_digests
from stages.runner.paths import DATASET
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

OUTPUT = DATASET
# The masks stage reads it; declared here, not in stages/runner/paths.py, which every stage depends on.
MASK_DIGESTS = Path("data/mask_digests.zarr")


def run(stage: Stage) -> StageResult:
    """Decode and check every file, then index ids, split membership, image-level labels, sizes and
    file MD5s into data/dataset.zarr, and each mask's MD5 into data/mask_digests.zarr."""
    config = stage.section("dataset", DatasetConfig)
    source = open_source(config)
    summary = write_index(OUTPUT, config, progress=lambda items: progress(items, total=len(items), desc="dataset"), source=source)
    write_mask_digests(MASK_DIGESTS, source, DatasetIndex(OUTPUT), progress=lambda items: progress(items, total=len(items), desc="mask digests"))
    stage.say(f"indexed {summary['images']} images {summary['per_split']} with {summary['classes']} classes "
         f"({config.format}, {summary['masks']} with a mask) into {OUTPUT}")
    return StageResult(summary["images"], "image")
