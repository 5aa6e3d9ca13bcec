"""crf_labels stage: confident foreground / background / neutral labels from the seeds by dense CRF."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.artifacts import Artifact, ArtifactWriter
from pipeline.crf import CRFParams, confident_labels_many, scaled_to
from pipeline.dataset_index import DatasetIndex
from pipeline.progress import progress_bar
from pipeline.seeds import cam_positions, full_resolution_seeds
from stages import params as P
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import CAMS, CRF_LABELS, DATASET

OUTPUT = CRF_LABELS
KIND = "crf_labels"
CHUNK = 64  # images handed to the worker pool at a time, to bound memory


def main(params_file: Path = PARAMS_OPTION) -> None:
    """Two dense CRFs per image (low and high background alpha) -> data/crf_labels.zarr (0 bg, class, 255 neutral)."""
    params = StageParams(params_file)
    cfg = params.section("crf", P.CrfParams)
    index = DatasetIndex(DATASET)
    cams = Artifact(CAMS, "cams")
    positions = cam_positions(index, cams)
    base = CRFParams(cfg.alpha_low, cfg.alpha_high, cfg.gauss_sxy, cfg.gauss_compat, cfg.bilateral_sxy, cfg.bilateral_srgb, cfg.bilateral_compat, cfg.iterations)
    max_size = tuple(int(v) for v in index.sizes[positions].max(axis=0))

    def jobs(start: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, CRFParams]]:
        for row in range(start, min(start + CHUNK, len(positions))):
            image = index.image(positions[row])
            seeds, labels = full_resolution_seeds(cams, row, image.shape[:2])
            side = max(image.shape[:2])
            yield image, seeds, labels, scaled_to(base, side, cfg.reference_side) if cfg.scale_with_image else base

    attrs = {"class_names": index.class_names, "crf": cfg.__dict__, "values": "0 background, k class k, 255 neutral"}
    bar = progress_bar(len(positions), desc="crf_labels")
    with ArtifactWriter(OUTPUT, KIND, cams.ids, attrs) as out:
        out.create("labels", max_size, "uint8", max_shape=True)
        for start in range(0, len(positions), CHUNK):
            images, seeds, labels, settings = zip(*jobs(start))
            maps = confident_labels_many(images, seeds, labels, settings, workers=cfg.workers, progress=bar.update)
            for offset, label_map in enumerate(maps):
                out.write("labels", start + offset, label_map)
    bar.close()
    echo(f"crf_labels: {len(positions)} label maps -> {OUTPUT}")
