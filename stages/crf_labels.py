"""crf_labels stage: confident foreground / background / neutral labels from the seeds by dense CRF."""
from __future__ import annotations

from pathlib import Path


from pipeline.artifacts import Artifact, ArtifactWriter
from pipeline.crf import CRFConfig, confident_labels_many
from pipeline.dataset_index import DatasetIndex
from pipeline.progress import progress_bar
from pipeline.seeds import cam_positions, full_resolution_seeds
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import CAMS, CRF_LABELS, DATASET

OUTPUT = CRF_LABELS
KIND = "crf_labels"
CHUNK = 64  # images handed to the worker pool at a time, to bound memory


def main(params_file: Path = PARAMS_OPTION) -> None:
    """Two dense CRFs per image (low and high background alpha) -> data/crf_labels.zarr (0 bg, class, 255 neutral)."""
    params = StageParams(params_file)
    cfg = params.section("crf", CRFConfig)
    index = DatasetIndex(DATASET)
    cams = Artifact(CAMS, "cams")
    positions = cam_positions(index, cams)
    max_size = tuple(int(v) for v in index.sizes[positions].max(axis=0))
    attrs = {"class_names": index.class_names, "crf": cfg.__dict__, "values": "0 background, k class k, 255 neutral"}
    bar = progress_bar(len(positions), desc="crf_labels")
    with ArtifactWriter(OUTPUT, KIND, cams.ids, attrs) as out:
        out.create("labels", max_size, "uint8", max_shape=True)
        for start in range(0, len(positions), CHUNK):
            rows = range(start, min(start + CHUNK, len(positions)))
            images = [index.image(positions[row]) for row in rows]
            seeds, labels = zip(*(full_resolution_seeds(cams, row, image.shape[:2]) for row, image in zip(rows, images)))
            for row, label_map in zip(rows, confident_labels_many(images, seeds, labels, cfg, progress=bar.update)):
                out.write("labels", row, label_map)
    bar.close()
    echo(f"crf_labels: {len(positions)} label maps -> {OUTPUT}")
