"""masks stage: the ground-truth masks of the indexed images into data/masks.zarr, for evaluation only."""
from __future__ import annotations

from pipeline.core.errors import InputError
from pipeline.core.progress import progress
from pipeline.data.index import DatasetIndex
from pipeline.sources.build_index import DatasetConfig, open_source, write_masks
from stages.dataset import MASK_DIGESTS
from stages.runner.paths import DATASET, MASKS
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

OUTPUT = MASKS


def run(stage: Stage) -> StageResult:
    """Read (VOC, folder) or rasterise (COCO) the mask of every indexed image that has one, as the dataset stage recorded it."""
    config = stage.section("dataset", DatasetConfig)
    index = DatasetIndex(DATASET)
    source = open_source(config)
    if list(source.class_names) != index.class_names:
        raise InputError(f"{DATASET} was indexed with other classes than {config.root} has now; rerun the dataset stage")
    count = write_masks(OUTPUT, source, index, MASK_DIGESTS, progress=lambda items: progress(items, total=len(items), desc="masks"))
    stage.say(f"{count} of {len(index.ids)} images have a ground-truth mask -> {OUTPUT}"
         + ("" if count else " (no ground truth: evaluation stages will say so instead of scoring)"))
    return StageResult(len(index.ids), "image")
