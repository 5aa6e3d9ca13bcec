"""random_walk stage: spread the seeds with AffinityNet's transition matrix; write masks and VOC PNGs."""
from __future__ import annotations

from pathlib import Path

from pipeline.affinity.net import affinity_grid, load_affinitynet, mean_affinity, predict_affinity
from pipeline.affinity.pairs import half_disc_offsets
from pipeline.artifacts import Artifact, ArtifactWriter
from pipeline.preprocess import normalise, resize_square, to_tensor
from pipeline.dataset_index import DatasetIndex
from pipeline.progress import progress_bar
from pipeline.files import id_filename
from pipeline.random_walk import RandomWalkConfig, refine
from pipeline.seeds import cam_positions, present_class_maps
from pipeline.voc import save_label_png
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.staging import finish, resuming_note, staging_folder
from stages.paths import AFFINITYNET, CAMS, CLASSIFIER, DATASET, PSEUDO_LABELS, REFINED

OUTPUT = REFINED
PNG_DIR = PSEUDO_LABELS
KIND = "refined"
BATCH = 8


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Random walk T^t on [background, classes] seeds -> data/refined.zarr and data/pseudo_labels/<id>.png."""
    params = StageParams(params_file)
    cfg = params.section("random_walk", RandomWalkConfig)
    group, device = params.join()
    index = DatasetIndex(DATASET)
    cams = Artifact(CAMS, "cams")
    positions = cam_positions(index, cams)
    net, meta = load_affinitynet(AFFINITYNET, CLASSIFIER, device)
    image_size = meta["image_size"]
    offsets = half_disc_offsets(cfg.radius)
    max_size = tuple(int(v) for v in index.sizes[positions].max(axis=0))
    attrs = {"class_names": index.class_names, "random_walk": cfg.__dict__, "values": "0 background, k class k"}
    staging = staging_folder("random_walk", params, group)
    with ArtifactWriter(OUTPUT, KIND, cams.ids, attrs, params.shard_size(), work=staging and staging / OUTPUT.name, group=group) as out:
        out.create("labels", max_size, "uint8", max_shape=True)
        # Mean affinity of each feature cell to its radius neighbours: low on boundaries (for figures).
        out.create("affinity", affinity_grid(net, image_size, device), "float16")
        png_folder = out.attach_folder(PNG_DIR)  # put in place with the store, once complete
        resuming_note("random_walk", len(out.done_before), out.shard_count, "shards", group)
        shards = out.my_shards()
        bar = progress_bar(sum(len(out.rows(shard)) for shard in shards), desc="random_walk")
        for shard in shards:
            shard_rows = out.rows(shard)
            seeds = zip(cams.iter_rows("cams", shard_rows), cams.iter_rows("labels", shard_rows))
            for start in range(shard_rows.start, shard_rows.stop, BATCH):  # batches within the shard: the same on any rank
                rows = range(start, min(start + BATCH, shard_rows.stop))
                originals = [index.image(positions[r]) for r in rows]
                batch = normalise(to_tensor([resize_square(image, image_size) for image in originals]).to(device))
                affinity = predict_affinity(net, batch, offsets).double().cpu().numpy()
                for k, row in enumerate(rows):
                    maps, labels = present_class_maps(*next(seeds))
                    mask = refine(maps, labels, affinity[k], offsets, cfg, originals[k].shape[:2])
                    save_label_png(png_folder / f"{id_filename(cams.ids[row])}.png", mask)
                    out.write("labels", row, mask)
                    out.write("affinity", row, mean_affinity(affinity[k], offsets))
                bar.update(len(rows))
        bar.close()
    finish(staging, group, f"random_walk: {len(positions)} pseudo-masks -> {OUTPUT}, {PNG_DIR}/")
    return len(positions), "image"
