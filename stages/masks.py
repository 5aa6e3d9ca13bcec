"""masks stage: the ground-truth masks of the indexed images into data/masks.zarr, for evaluation only."""
from __future__ import annotations

from pathlib import Path

from pipeline.dataset_index import DatasetIndex
from pipeline.indexing import DatasetConfig, open_source
from pipeline.errors import InputError
from pipeline.ground_truth import write_masks
from pipeline.progress import progress
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import DATASET, MASKS

OUTPUT = MASKS


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Read (VOC, folder) or rasterise (COCO) the mask of every indexed image that has one."""
    params = StageParams(params_file)
    config = params.section("dataset", DatasetConfig)
    index = DatasetIndex(DATASET)
    source = open_source(config)
    if list(source.class_names) != index.class_names:
        raise InputError(f"{DATASET} was indexed with other classes than {config.root} has now; rerun the dataset stage")
    count = write_masks(OUTPUT, source, index, progress=lambda items: progress(items, total=len(items), desc="masks"))
    echo(f"masks: {count} of {len(index.ids)} images have a ground-truth mask -> {OUTPUT}"
         + ("" if count else " (no ground truth: evaluation stages will say so instead of scoring)"))
    return len(index.ids), "image"
