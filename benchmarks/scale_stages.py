"""The stage workers of benchmarks/bench_scale.py: each runs one stage's library code at the preset's
settings on generated images and returns its table row (see that script for what is measured).

Each stage imports its own library modules only, so that a worker's host peak counts what its
stage loads (the CRF stage, for one, never loads a network).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from scale_data import Sample, coarse_seeds, dataset_scale, generate, multi_hot, repeated

from pipeline.core.errors import InputError
from pipeline.core.memory import GIB, MemoryConfig
from pipeline.data.preprocess import resize_square, to_tensor
from stages.runner import params as P

T = TypeVar("T")
SEED_STRIDE = 16  # seeds live on a stride-16 token grid (ViT-B/16, the demo hybrid); the CRF and walk costs hardly depend on it


def without_downloads(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with random initial weights: nothing is fetched or read from a weights file."""
    params = copy.deepcopy(params)
    params.get("train_cls", {})["pretrained"] = False
    network = params.get("train_seg", {}).get("network", {})
    if network.get("weights") not in (False, "classifier"):
        network["weights"] = False
    return params


class Rehearsal:
    """What a worker shares across its stage: the preset's params, the device, generated samples,
    and a folder for the random classifier's checkpoint."""

    def __init__(self, params: dict[str, Any], source: str, images: int, steps: int, workdir: Path) -> None:
        self.params, self.source, self.steps, self.workdir = without_downloads(params), source, steps, workdir
        self.scale = dataset_scale(params)
        self.samples = generate(self.scale, images)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def section(self, name: str, cls: type[T]) -> T:
        return P.section(self.params, name, cls, self.source)

    def budget(self) -> int:
        return self.section("memory", MemoryConfig).budget_bytes

    def timed(self, run: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
        """``run``'s result and its wall seconds, queued CUDA work included."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        result = run(*args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return result, time.perf_counter() - start

    def classifier(self, dynamic: bool = False) -> torch.nn.Module:
        """train_cls's network with random weights, on the device, in eval mode (as load_classifier gives it)."""
        from pipeline.classifier.model import build_classifier
        from pipeline.classifier.train import ClassifierConfig

        cfg = self.section("train_cls", ClassifierConfig)
        torch.manual_seed(cfg.seed)
        model = build_classifier(cfg.model, self.scale.num_classes, cfg.image_size, False, cfg.demo_hybrid, dynamic_img_size=dynamic)
        return model.to(self.device).eval()

    def classifier_path(self) -> Path:
        """The random classifier saved as train_cls saves it: AffinityNet and the segmenter build on the file."""
        from pipeline.classifier.model import classifier_meta, save_checkpoint
        from pipeline.classifier.train import ClassifierConfig

        path = self.workdir / "classifier.pt"
        if not path.exists():
            cfg = self.section("train_cls", ClassifierConfig)
            names = [f"class{k}" for k in range(1, self.scale.num_classes + 1)]
            save_checkpoint(path, self.classifier(), classifier_meta(cfg.model, self.scale.num_classes, cfg.image_size, names, cfg.demo_hybrid))
        return path

    def seed_grid(self) -> tuple[int, int]:
        # The raw value: CamsConfig's module imports timm, which the CRF stage never loads.
        side = max(1, int(self.params["cams"]["image_size"]) // SEED_STRIDE)
        return side, side


def row(items: int, unit: str, elapsed: float, work: float, setting: str, **detail: Any) -> dict[str, Any]:
    """A table row: ``items`` done in ``elapsed`` s; ``work`` is the full dataset's count of such items."""
    rate = items / elapsed
    return {"items": items, "unit": unit, "seconds": elapsed, "rate": rate, "projected_s": work / rate, "setting": setting, **detail}


def train_cls(r: Rehearsal) -> dict[str, Any]:
    """Optimizer steps of train_classifier (augmentation, BCE, schedule), plus the per-epoch val pass."""
    from pipeline.classifier.model import build_classifier
    from pipeline.classifier.train import ClassifierConfig, predict_scores, train_classifier

    cfg = r.section("train_cls", ClassifierConfig)
    k, bs = r.scale.num_classes, cfg.batch_size
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.model, k, cfg.image_size, False, cfg.demo_hybrid)
    batch = repeated(r.samples, bs * max(r.steps, 2))
    images, labels = to_tensor([resize_square(s.image, cfg.image_size) for s in batch]), torch.from_numpy(multi_hot(batch, k))
    # One validation image inside the loop; the epoch's val pass is timed on its own below.
    train = partial(train_classifier, model, val_images=images[:1], val_labels=multi_hot(batch[:1], k),
                    config=dataclasses.replace(cfg, epochs=1, warmup_epochs=0), device=r.device)
    train(images[:bs], labels[:bs])  # warm-up: one step
    items = bs * r.steps
    _, elapsed = r.timed(train, images[:items], labels[:items])
    score = partial(predict_scores, model, images[: 2 * bs], 2 * bs, r.device)  # the stage scores val in batches of 2 x batch_size
    score()
    _, val_s = r.timed(score)
    val_rate = 2 * bs / val_s
    train_n = r.scale.images([cfg.train_split], "train_cls.train_split")
    val_n = r.scale.images([cfg.val_split], "train_cls.val_split")
    work = cfg.epochs * (train_n + val_n * items / elapsed / val_rate)  # val time in training-image units
    return row(items, "image", elapsed, work, f"{cfg.model} {cfg.image_size} px, batch {bs}, amp {cfg.amp}; "
               f"val {val_rate:.3g} img/s x {val_n}/epoch", val_rate=val_rate)


def cams(r: Rehearsal) -> dict[str, Any]:
    """plan_scales + multiscale_relevance on every (image, present class) pair, as the cams stage."""
    from pipeline.classifier.model import token_stride
    from pipeline.classifier.train import ClassifierConfig
    from pipeline.core.memory import require_available
    from pipeline.seeds.relevance import CamsConfig, multiscale_relevance, normalise_by_max, plan_scales, require_method

    cfg = r.section("cams", CamsConfig)
    if cfg.image_size != r.section("train_cls", ClassifierConfig).image_size:
        raise InputError(f"{r.source}: cams.image_size={cfg.image_size} differs from train_cls.image_size; the cams stage stops there")
    model = r.classifier(dynamic=any(scale != 1.0 for scale in cfg.scales))
    require_method(model, cfg.method, f"{r.source}: cams.method")
    stride = token_stride(model)
    grid = (cfg.image_size // stride, cfg.image_size // stride)
    pairs = [(s, int(label) - 1) for s in r.samples for label in s.labels]
    images = to_tensor([resize_square(s.image, cfg.image_size) for s, _ in pairs])
    classes = torch.tensor([c for _, c in pairs])
    plans = plan_scales(model, cfg.image_size, stride, cfg, r.budget())
    require_available(max(plan.peak for plan in plans), r.device, "cams (the largest planned batch)")
    relevance = partial(multiscale_relevance, model, grid=grid, stride=stride, config=cfg, plans=plans)
    relevance(images[:1], classes[:1], plans=plans[:1])  # warm-up, at the first scale only
    _, elapsed = r.timed(lambda: normalise_by_max(relevance(images, classes).float().cpu().numpy()))
    work = r.scale.images(cfg.splits, "cams.splits") * r.scale.classes_per_image
    return row(len(pairs), "pair", elapsed, work, f"{cfg.method}, scales {cfg.scales}, flip {cfg.flip}, "
               f"batches {[plan.batch for plan in plans]}{' (recomputed)' * any(p.recompute for p in plans)}",
               planned_peak_gib=max(plan.peak for plan in plans) / GIB)


def crf_labels(r: Rehearsal) -> dict[str, Any]:
    """confident_labels_many (two dense CRFs per image) at the full image size, in one process."""
    from pipeline.refine.confident import CRFConfig, confident_labels_many
    from pipeline.seeds.stored import upsample_seeds

    cfg = r.section("crf", CRFConfig)
    seeds = [upsample_seeds(coarse_seeds(s, r.seed_grid()), s.mask.shape).clip(0, 1) for s in r.samples]
    images, labels = [s.image for s in r.samples], [s.labels for s in r.samples]
    single = dataclasses.replace(cfg, workers=1)  # per process: a pool's start-up would swamp a few images
    confident_labels_many(images[:1], seeds[:1], labels[:1], single)
    _, elapsed = r.timed(confident_labels_many, images, seeds, labels, single)
    workers = min(cfg.workers, os.cpu_count() or 1)
    work = r.scale.images(r.params["cams"]["splits"], "cams.splits") / workers
    return row(len(images), "image", elapsed, work, f"{r.scale.width}x{r.scale.height} px, {cfg.iterations} iterations x 2 CRFs; "
               f"1 process timed, projected for {workers} (crf.workers, at most the cores)")


def train_aff(r: Rehearsal) -> dict[str, Any]:
    """train_affinitynet steps at aff_pairs.image_size and train_aff.batch_size."""
    from pipeline.data.label_maps import resize_labels
    from pipeline.refine.affinity.net import affinity_grid, build_affinitynet
    from pipeline.refine.affinity.pairs import AffPairsConfig, half_disc_offsets
    from pipeline.refine.affinity.train import AffinityTrainConfig, train_affinitynet

    cfg, pairs = r.section("train_aff", AffinityTrainConfig), r.section("aff_pairs", AffPairsConfig)
    torch.manual_seed(cfg.seed)
    net = build_affinitynet(r.classifier_path(), pairs.image_size, cfg.hidden_channels, cfg.out_channels, r.device)
    grid = affinity_grid(net, pairs.image_size, r.device)
    batch = repeated(r.samples, cfg.batch_size * r.steps)
    images = [resize_square(s.image, pairs.image_size) for s in batch]
    labels = [resize_labels(s.mask, grid) for s in batch]
    train = partial(train_affinitynet, net, offsets=half_disc_offsets(pairs.radius),
                    config=dataclasses.replace(cfg, epochs=1), device=r.device)
    train(images[: cfg.batch_size], labels[: cfg.batch_size])  # warm-up: one step
    _, elapsed = r.timed(train, images, labels)
    work = cfg.epochs * r.scale.images([pairs.split], "aff_pairs.split")
    return row(len(batch), "image", elapsed, work, f"{pairs.image_size} px, grid {grid[0]}x{grid[1]}, "
               f"radius {pairs.radius}, batch {cfg.batch_size}, amp {cfg.amp}")


def random_walk(r: Rehearsal) -> dict[str, Any]:
    """predict_affinity in the stage's batches, then refine (the walk) and mean_affinity per image."""
    from pipeline.data.preprocess import normalise
    from pipeline.refine.affinity.net import affinity_grid, build_affinitynet, mean_affinity, predict_affinity
    from pipeline.refine.affinity.pairs import AffPairsConfig, half_disc_offsets
    from pipeline.refine.affinity.train import AffinityTrainConfig
    from pipeline.refine.random_walk import RandomWalkConfig, refine
    from pipeline.seeds.relevance import CamsConfig
    from stages.random_walk import BATCH

    cfg, pairs, aff = r.section("random_walk", RandomWalkConfig), r.section("aff_pairs", AffPairsConfig), r.section("train_aff", AffinityTrainConfig)
    net = build_affinitynet(r.classifier_path(), pairs.image_size, aff.hidden_channels, aff.out_channels, r.device).eval()
    offsets = half_disc_offsets(pairs.radius)  # the radius AffinityNet trained on

    def walk(samples: list[Sample]) -> None:
        for start in range(0, len(samples), BATCH):
            part = samples[start : start + BATCH]
            batch = normalise(to_tensor([resize_square(s.image, pairs.image_size) for s in part]).to(r.device))
            affinity = predict_affinity(net, batch, offsets).double().cpu().numpy()
            for k, s in enumerate(part):
                refine(coarse_seeds(s, r.seed_grid()), s.labels, affinity[k], offsets, cfg, s.mask.shape)
                mean_affinity(affinity[k], offsets)

    walk(r.samples[:1])  # warm-up
    _, elapsed = r.timed(walk, r.samples)
    grid = affinity_grid(net, pairs.image_size, r.device)
    work = r.scale.images(r.section("cams", CamsConfig).splits, "cams.splits")
    return row(len(r.samples), "image", elapsed, work, f"grid {grid[0]}x{grid[1]}, radius {pairs.radius}, "
               f"beta {cfg.beta:g}, {cfg.steps} steps, batch {BATCH}")


def train_seg(r: Rehearsal) -> dict[str, Any]:
    """train_segmenter steps: random-scale crops of full-size images, cross-entropy, optimizer step."""
    from pipeline.segmentation.net import build_segmenter
    from pipeline.segmentation.train import SegTrainConfig, train_segmenter

    cfg = r.section("train_seg", SegTrainConfig)
    torch.manual_seed(cfg.seed)
    net = build_segmenter(cfg.network, r.scale.num_classes + 1, r.classifier_path())
    batch = repeated(r.samples, cfg.batch_size * r.steps)
    images, masks = [s.image for s in batch], [s.mask for s in batch]
    train = partial(train_segmenter, net, config=dataclasses.replace(cfg, epochs=1), device=r.device)
    train(images[: cfg.batch_size], masks[: cfg.batch_size])  # warm-up: one step
    _, elapsed = r.timed(train, images, masks)
    work = cfg.epochs * r.scale.images(cfg.splits, "train_seg.splits")
    return row(len(batch), "crop", elapsed, work, f"backbone {cfg.network.backbone}, {cfg.crop_size} px crops, "
               f"batch {cfg.batch_size}, amp {cfg.amp}")


def evaluate_seg(r: Rehearsal) -> dict[str, Any]:
    """check_inference_fits, then predict_probs (scales, flip) and crf_labels per full-size image."""
    from pipeline.segmentation.infer import EvaluateSegConfig, check_inference_fits, crf_labels, predict_probs
    from pipeline.segmentation.net import build_segmenter
    from pipeline.segmentation.train import SegTrainConfig

    cfg = r.section("evaluate_seg", EvaluateSegConfig)
    net = build_segmenter(r.section("train_seg", SegTrainConfig).network, r.scale.num_classes + 1, r.classifier_path())
    net = net.to(r.device).eval()
    # over the budget or the device's free memory: the stage stops here too
    check_inference_fits(net, (r.scale.height, r.scale.width), cfg.scales, cfg.flip, r.budget(), r.device, "evaluate_seg")
    predict = partial(predict_probs, net, scales=cfg.scales, flip=cfg.flip, device=r.device)
    crf_labels(r.samples[0].image, predict(r.samples[0].image), cfg.crf)  # warm-up
    network_s = crf_s = 0.0
    for s in r.samples:  # one image at a time: a COCO image's probabilities take 0.1 GB
        probs, seconds = r.timed(predict, s.image)
        network_s += seconds
        crf_s += r.timed(crf_labels, s.image, probs, cfg.crf)[1]
    n = len(r.samples)
    work = r.scale.images([cfg.split], "evaluate_seg.split")
    return row(n, "image", network_s + crf_s, work, f"{r.scale.width}x{r.scale.height} px, scales {cfg.scales}, flip {cfg.flip}; "
               f"network {network_s / n:.3g} s + CRF {crf_s / n:.3g} s per image", network_s=network_s, crf_s=crf_s)


def evaluation_batch(samples: list[Sample], size: int, num_classes: int) -> dict[str, torch.Tensor]:
    """A batch as stages/explain_eval.py's dataset_batches makes it: [0, 1] images, multi-hot labels, masks."""
    from pipeline.data.label_maps import resize_labels

    return {
        "images": to_tensor([resize_square(s.image, size) for s in samples]).float() / 255.0,
        "labels": torch.from_numpy(multi_hot(samples, num_classes)).long(),
        "masks": torch.from_numpy(np.stack([resize_labels(s.mask, (size, size)) for s in samples])),
    }


def explain_eval(r: Rehearsal) -> dict[str, Any]:
    """evaluate_method (perturbation + segmentation tests) per method on one batch, planned as the stage plans."""
    from pipeline.classifier.train import ClassifierConfig
    from pipeline.data.preprocess import normalise
    from pipeline.evaluation.explanations import ExplainEvalConfig, evaluate_method
    from pipeline.explain.planning import planned_explainers
    from pipeline.seeds.relevance import require_method

    cfg, size = r.section("explain_eval", ExplainEvalConfig), r.section("train_cls", ClassifierConfig).image_size
    model = r.classifier()
    for method in cfg.methods:
        require_method(model, method, f"{r.source}: explain_eval.methods")
    explainers, max_forward, planned_peak = planned_explainers(model, cfg.methods, cfg.start_layer, size, cfg.batch_size, cfg.max_forward_batch,
                                                 r.budget(), r.device, "explain_eval")
    # The stage's batch_size images, or --images where fewer (the CPU): the planned peak is the full batch's
    timed_images = min(cfg.batch_size, len(r.samples))
    batch = evaluation_batch(repeated(r.samples, timed_images), size, r.scale.num_classes)
    first = {key: value[:1] for key, value in batch.items()}
    evaluate = partial(evaluate_method, model, normalise=normalise, rule="multi_label", segmentation_mode="predicted",
                       max_batch=max_forward)
    seconds = {}
    for method in cfg.methods:
        evaluate([first], explainer=explainers[method])  # warm-up
        seconds[method] = r.timed(evaluate, [batch], explainer=explainers[method])[1]
    split_n = r.scale.images([cfg.split], "explain_eval.split")
    images = split_n if cfg.max_images == 0 else min(cfg.max_images, split_n)
    slowest = max(seconds, key=seconds.get)
    return row(timed_images * len(cfg.methods), "image-method", sum(seconds.values()), images * len(cfg.methods),
               f"{len(cfg.methods)} methods, batch {cfg.batch_size}, forward batch {max_forward}, {images} images; "
               f"slowest {slowest} {seconds[slowest] / timed_images:.3g} s/image", method_s=seconds,
               planned_peak_gib=planned_peak / GIB)


NETWORKLESS = {"crf_labels"}  # stages that never import timm (nor load a network)
WORKERS: dict[str, Callable[[Rehearsal], dict[str, Any]]] = {
    "train_cls": train_cls, "cams": cams, "crf_labels": crf_labels, "train_aff": train_aff, "random_walk": random_walk,
    "train_seg": train_seg, "evaluate_seg": evaluate_seg, "explain_eval": explain_eval,
}
