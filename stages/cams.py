"""cams stage: relevance seeds for every present class of every image, on the token grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts import ArtifactWriter
from pipeline.preprocess import resize_square, to_tensor
from pipeline.dataset_index import DatasetIndex
from pipeline.errors import InputError
from pipeline.models import load_classifier, token_stride
from pipeline.progress import progress_bar
from pipeline.cams import CamsConfig, multiscale_relevance, normalise_by_max, plan_scales, require_method
from pipeline.memory import MemoryConfig, require_available
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.staging import finish, resuming_note, staging_folder
from stages.paths import CAMS, CLASSIFIER, DATASET

OUTPUT = CAMS
KIND = "cams"


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Explain the classifier for each ground-truth class of each image; writes data/cams.zarr (float16)."""
    params = StageParams(params_file)
    cfg = params.section("cams", CamsConfig)
    memory = params.section("memory", MemoryConfig)
    group, device = params.join()
    index = DatasetIndex(DATASET)
    # Other input sizes than the training one need the position embedding resized on the fly.
    dynamic = any(scale != 1.0 for scale in cfg.scales)
    model, meta = load_classifier(CLASSIFIER, device, dynamic_img_size=dynamic)
    if meta["class_names"] != index.class_names:
        raise InputError(f"{CLASSIFIER} was trained on classes {meta['class_names']} but {DATASET} has {index.class_names}; rerun train_cls")
    if cfg.image_size != meta["image_size"]:
        raise InputError(f"{params.source}: cams.image_size={cfg.image_size} differs from the classifier's train_cls.image_size={meta['image_size']}; "
                         "set them equal (cams.scales explains at other sizes)")
    require_method(model, cfg.method, f"{params.source}: cams.method")
    stride = token_stride(model)
    if cfg.image_size % stride:
        raise InputError(f"{params.source}: cams.image_size={cfg.image_size} must be a multiple of the token stride {stride}")
    grid = (cfg.image_size // stride, cfg.image_size // stride)
    positions = index.indices(cfg.splits)
    ids = [index.ids[i] for i in positions]
    attrs = {
        "class_names": index.class_names, "grid": list(grid), "stride": stride, "image_size": cfg.image_size,
        "method": cfg.method, "start_layer": cfg.start_layer, "scales": cfg.scales, "flip": cfg.flip,
        "normalisation": "per class: clip at 0, divide by its max",
    }
    plans = plan_scales(model, cfg.image_size, stride, cfg, memory.budget_bytes)
    require_available(max(plan.peak for plan in plans), device, "cams (the largest planned batch)")
    staging = staging_folder("cams", params, group)
    with ArtifactWriter(OUTPUT, KIND, ids, attrs, params.shard_size(), work=staging and staging / OUTPUT.name, group=group) as out:
        out.create("cams", (index.num_classes, *grid), "float16")
        out.create("labels", (index.num_classes,), "uint8")
        resuming_note("cams", len(out.done_before), out.shard_count, "shards", group)
        shards = out.my_shards()
        # One explanation per (image, present class), batched within a shard so that a batch,
        # and so every map, is the same whichever rank computes the shard.
        work = {shard: [(row, int(c)) for row in out.rows(shard) for c in np.nonzero(index.labels[positions[row]])[0]] for shard in shards}
        bar = progress_bar(sum(len(pairs) for pairs in work.values()) * len(plans), desc="cams", unit="map·scale")
        for shard, pairs in work.items():
            maps_of = {row: np.zeros((index.num_classes, *grid), np.float32) for row in out.rows(shard)}
            if pairs:
                # An image with several present classes is explained once per class: decode it once.
                decoded = {row: resize_square(index.image(int(positions[row])), cfg.image_size) for row in dict.fromkeys(r for r, _ in pairs)}
                images = to_tensor([decoded[row] for row, _ in pairs])
                classes = torch.tensor([c for _, c in pairs])
                maps = multiscale_relevance(model, images, classes, grid, stride, cfg, plans, progress=bar.update)
                for (row, c), m in zip(pairs, normalise_by_max(maps.float().cpu().numpy())):
                    maps_of[row][c] = m
            # Images without labels keep all-zero maps.
            for row, maps in maps_of.items():
                out.write("labels", row, index.labels[positions[row]])
                out.write("cams", row, maps)
        bar.close()
    maps_total = int(index.labels[positions].sum())
    finish(staging, group, f"cams: {maps_total} maps for {len(ids)} images ({cfg.method}) -> {OUTPUT}")
    return maps_total, "map"
