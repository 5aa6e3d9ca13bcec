"""cams stage: relevance seeds for every present class of every image, on the token grid."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.classifier.model import load_classifier, token_stride
from pipeline.core.errors import InputError
from pipeline.core.memory import MemoryConfig, require_available
from pipeline.data.index import DatasetIndex
from pipeline.data.preprocess import resize_square, to_tensor
from pipeline.seeds.relevance import CamsConfig, multiscale_relevance, normalise_by_max, plan_scales, require_method
from stages.runner.paths import CAMS, CLASSIFIER, DATASET
from stages.runner.spec import StageResult
from stages.runner.stage import Stage


def run(stage: Stage) -> StageResult:
    """Explain the classifier for each ground-truth class of each image; writes data/cams.zarr (float16)."""
    cfg = stage.section("cams", CamsConfig)
    memory = stage.section("memory", MemoryConfig)
    device = stage.device
    index = DatasetIndex(DATASET)
    # Other input sizes than the training one need the position embedding resized on the fly.
    dynamic = any(scale != 1.0 for scale in cfg.scales)
    model, meta = load_classifier(CLASSIFIER, device, dynamic_img_size=dynamic)
    if meta["class_names"] != index.class_names:
        raise InputError(f"{CLASSIFIER} was trained on classes {meta['class_names']} but {DATASET} has {index.class_names}; rerun train_cls")
    if cfg.image_size != meta["image_size"]:
        raise InputError(f"{stage.source}: cams.image_size={cfg.image_size} differs from the classifier's train_cls.image_size={meta['image_size']}; "
                         "set them equal (cams.scales explains at other sizes)")
    require_method(model, cfg.method, f"{stage.source}: cams.method")
    stride = token_stride(model)
    if cfg.image_size % stride:
        raise InputError(f"{stage.source}: cams.image_size={cfg.image_size} must be a multiple of the token stride {stride}")
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
    with stage.sharded(CAMS, "cams", ids, attrs) as job:
        job.out.create("cams", (index.num_classes, *grid), "float16")
        job.out.create("labels", (index.num_classes,), "uint8")
        # One explanation per (image, present class), batched within a shard so that a batch,
        # and so every map, is the same whichever rank computes the shard.
        pairs_of = {shard: [(row, int(c)) for row in job.out.rows(shard) for c in np.nonzero(index.labels[positions[row]])[0]]
                    for shard in job.shards()}
        job.progress(sum(len(pairs) for pairs in pairs_of.values()) * len(plans), unit="map·scale")
        for shard, pairs in pairs_of.items():
            maps_of = {row: np.zeros((index.num_classes, *grid), np.float32) for row in job.out.rows(shard)}
            if pairs:
                # An image with several present classes is explained once per class: decode it once.
                decoded = {row: resize_square(index.image(int(positions[row])), cfg.image_size) for row in dict.fromkeys(r for r, _ in pairs)}
                images = to_tensor([decoded[row] for row, _ in pairs])
                classes = torch.tensor([c for _, c in pairs])
                maps = multiscale_relevance(model, images, classes, grid, stride, cfg, plans, progress=job.bar.update)
                for (row, c), m in zip(pairs, normalise_by_max(maps.float().cpu().numpy())):
                    maps_of[row][c] = m
            # Images without labels keep all-zero maps.
            for row, maps in maps_of.items():
                job.out.write("labels", row, index.labels[positions[row]])
                job.out.write("cams", row, maps)
    maps_total = int(index.labels[positions].sum())
    stage.say(f"{maps_total} maps for {len(ids)} images ({cfg.method}) -> {CAMS}")
    return StageResult(maps_total, "map")
