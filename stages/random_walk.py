"""random_walk stage: spread the seeds with AffinityNet's transition matrix; write masks and VOC PNGs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.affinity import affinity_grid, half_disc_offsets, load_affinitynet, mean_affinity, predict_affinity
from pipeline.artifacts import Artifact, ArtifactWriter
from pipeline.preprocess import normalise, resize_square, to_tensor
from pipeline.dataset_index import DatasetIndex
from pipeline.progress import progress_bar
from pipeline.random_walk import refine
from pipeline.seeds import cam_positions, present_class_maps
from pipeline.voc import save_label_png
from stages import params as P
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import AFFINITYNET, CAMS, CLASSIFIER, DATASET, PSEUDO_LABELS, REFINED

OUTPUT = REFINED
PNG_DIR = PSEUDO_LABELS
KIND = "refined"
BATCH = 8


def main(params_file: Path = PARAMS_OPTION) -> None:
    """Random walk T^t on [background, classes] seeds -> data/refined.zarr and data/pseudo_labels/<id>.png."""
    params = StageParams(params_file)
    cfg = params.section("random_walk", P.RandomWalkParams)
    device = params.device()
    index = DatasetIndex(DATASET)
    cams = Artifact(CAMS, "cams")
    positions = cam_positions(index, cams)
    net, meta = load_affinitynet(AFFINITYNET, CLASSIFIER, device)
    image_size = meta["image_size"]
    offsets = half_disc_offsets(cfg.radius)
    max_size = tuple(int(v) for v in index.sizes[positions].max(axis=0))
    attrs = {"class_names": index.class_names, "random_walk": cfg.__dict__, "values": "0 background, k class k"}
    png_tmp = PNG_DIR.with_name(f".{PNG_DIR.name}.tmp")
    shutil.rmtree(png_tmp, ignore_errors=True)
    png_tmp.mkdir(parents=True)
    bar = progress_bar(len(positions), desc="random_walk")
    with ArtifactWriter(OUTPUT, KIND, cams.ids, attrs) as out:
        out.create("labels", max_size, "uint8", max_shape=True)
        # Mean affinity of each feature cell to its radius neighbours: low on boundaries (for figures).
        out.create("affinity", affinity_grid(net, image_size, device), "float16")
        for start in range(0, len(positions), BATCH):
            rows = range(start, min(start + BATCH, len(positions)))
            originals = [index.image(positions[r]) for r in rows]
            batch = normalise(to_tensor([resize_square(image, image_size) for image in originals]).to(device))
            affinity = predict_affinity(net, batch, offsets).double().cpu().numpy()
            for k, row in enumerate(rows):
                maps, labels = present_class_maps(cams.read("cams", row), cams.read("labels", row))
                mask = refine(maps, labels, affinity[k], offsets, cfg.beta, cfg.steps, cfg.alpha, originals[k].shape[:2])
                out.write("labels", row, mask)
                out.write("affinity", row, mean_affinity(affinity[k], offsets))
                save_label_png(png_tmp / f"{cams.ids[row]}.png", mask)
            bar.update(len(rows))
    bar.close()
    shutil.rmtree(PNG_DIR, ignore_errors=True)
    os.replace(png_tmp, PNG_DIR)
    echo(f"random_walk: {len(positions)} pseudo-masks -> {OUTPUT}, {PNG_DIR}/")
