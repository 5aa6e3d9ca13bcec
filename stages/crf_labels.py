"""crf_labels stage: confident foreground / background / neutral labels from the seeds by dense CRF."""
from __future__ import annotations

from pipeline.core.artifacts import Artifact
from pipeline.data.index import DatasetIndex
from pipeline.refine.confident import CRFConfig, confident_labels_many
from pipeline.seeds.stored import cam_positions, full_resolution_seeds
from stages.runner.paths import CAMS, CRF_LABELS, DATASET
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

CHUNK = 64  # images handed to the worker pool at a time, to bound memory


def run(stage: Stage) -> StageResult:
    """Two dense CRFs per image (low and high background alpha) -> data/crf_labels.zarr (0 bg, class, 255 neutral)."""
    cfg = stage.section("crf", CRFConfig)
    index = DatasetIndex(DATASET)
    cams = Artifact(CAMS, "cams")
    positions = cam_positions(index, cams)
    max_size = tuple(int(v) for v in index.sizes[positions].max(axis=0))
    attrs = {"class_names": index.class_names, "crf": cfg.__dict__, "values": "0 background, k class k, 255 neutral"}
    with stage.sharded(CRF_LABELS, "crf_labels", cams.ids, attrs) as job:
        job.out.create("labels", max_size, "uint8", max_shape=True)
        for rows in job.batches(CHUNK, advance=False):  # the pool reports each image as it finishes
            images = [index.image(positions[row]) for row in rows]
            seeds, labels = zip(*(full_resolution_seeds(cams, row, image.shape[:2]) for row, image in zip(rows, images)))
            for row, label_map in zip(rows, confident_labels_many(images, seeds, labels, cfg, progress=job.bar.update)):
                job.out.write("labels", row, label_map)
    stage.say(f"{len(positions)} label maps -> {CRF_LABELS}")
    return StageResult(len(positions), "image")
