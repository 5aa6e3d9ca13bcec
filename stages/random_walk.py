"""random_walk stage: spread the seeds with AffinityNet's transition matrix; write masks and VOC PNGs."""
from __future__ import annotations

from pipeline.core.artifacts import Artifact
from pipeline.core.files import id_filename
from pipeline.data.index import DatasetIndex
from pipeline.data.label_maps import save_label_png
from pipeline.data.preprocess import normalise, resize_square, to_tensor
from pipeline.refine.affinity.net import affinity_grid, load_affinitynet, mean_affinity, predict_affinity
from pipeline.refine.affinity.pairs import half_disc_offsets
from pipeline.refine.random_walk import RandomWalkConfig, refine
from pipeline.seeds.stored import cam_positions, present_class_maps
from stages.runner.paths import AFFINITYNET, CAMS, CLASSIFIER, DATASET, PSEUDO_LABELS, REFINED
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

BATCH = 8


def run(stage: Stage) -> StageResult:
    """Random walk T^t on [background, classes] seeds -> data/refined.zarr and data/pseudo_labels/<id>.png."""
    cfg = stage.section("random_walk", RandomWalkConfig)
    device = stage.device
    index = DatasetIndex(DATASET)
    cams = Artifact(CAMS, "cams")
    positions = cam_positions(index, cams)
    net, meta = load_affinitynet(AFFINITYNET, CLASSIFIER, device)
    image_size, offsets = meta["image_size"], half_disc_offsets(meta["radius"])
    max_size = tuple(int(v) for v in index.sizes[positions].max(axis=0))
    attrs = {"class_names": index.class_names, "random_walk": {**cfg.__dict__, "radius": meta["radius"]},
             "values": "0 background, k class k"}
    with stage.sharded(REFINED, "refined", cams.ids, attrs) as job:
        job.out.create("labels", max_size, "uint8", max_shape=True)
        # Mean affinity of each feature cell to its radius neighbours: low on boundaries (for figures).
        job.out.create("affinity", affinity_grid(net, image_size, device), "float16")
        png_folder = job.out.attach_folder(PSEUDO_LABELS)  # put in place with the store, once complete
        for rows in job.batches(BATCH):
            originals = [index.image(positions[r]) for r in rows]
            batch = normalise(to_tensor([resize_square(image, image_size) for image in originals]).to(device))
            affinity = predict_affinity(net, batch, offsets).double().cpu().numpy()
            seeds = zip(cams.iter_rows("cams", rows), cams.iter_rows("labels", rows))
            for k, row in enumerate(rows):
                maps, labels = present_class_maps(*next(seeds))
                mask = refine(maps, labels, affinity[k], offsets, cfg, originals[k].shape[:2])
                save_label_png(png_folder / f"{id_filename(cams.ids[row])}.png", mask)
                job.out.write("labels", row, mask)
                job.out.write("affinity", row, mean_affinity(affinity[k], offsets))
    stage.say(f"{len(positions)} pseudo-masks -> {REFINED}, {PSEUDO_LABELS}/")
    return StageResult(len(positions), "image")
