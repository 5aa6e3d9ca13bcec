"""Evaluating explanation methods: the perturbation and segmentation tests (Chefer et al.,
CVPR 2021; docs/methods.md, "Evaluating explanations").

An explainer is any callable ``(images_normalised (R, 3, H, W), class_ids (R,)) -> maps``
returning raw relevance on the token grid (R, gh, gw) or at input resolution (R, H, W), e.g.
``functools.partial(explain, model, method="rollout")``. Maps are upsampled (bilinear) and
min-max normalised to [0, 1] before either test (:func:`prepare_maps`).

Explained class ("mode"), one row per explained (image, class) pair:

- ``"predicted"``: the class with the highest logit on the clean image (for multi-label this is
  also the highest sigmoid score), one row per image.
- ``"target"``: the ground truth. Single-label: the label, one row per image. Multi-label: one
  row per (image, present class) pair, image-major, classes ascending.

Correctness rule of a row at a perturbation step:

- ``"single_label"`` (ImageNet, the reference): top-1 argmax of the logits equals the
  ground-truth label, whatever class was explained.
- ``"multi_label"``: the explained class c is a ground-truth class of the image and is still
  predicted positive, logit_c > 0 (sigmoid > 0.5; a logit of exactly 0 is not positive). For
  ``"target"`` rows the first condition always holds; for ``"predicted"`` rows it makes a wrong
  top prediction count as an error, as a wrong top-1 does in the single-label rule.

Batches fed to :func:`evaluate_method` are mappings of tensors:

- ``"images"``: (B, 3, H, W) float, unnormalised, in [0, 1];
- ``"labels"``: (B,) long class indices (single-label) or (B, C) multi-hot (multi-label);
  needed by the perturbation test and by the "target" mode;
- ``"masks"``: (B, H, W) integers, needed by the segmentation test. Single-label: 0 background,
  1 foreground. Multi-label: a class-index map (VOC style); the foreground of explained class c
  is the union of its objects, ``mask == c + mask_class_offset``. 255 is ignored in both.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import numpy as np
import torch

from pipeline.config import knob
from pipeline.distributed import Group
from pipeline.explain import method_names
from pipeline.maps import min_max, upsample_min_max
from pipeline.metrics import IGNORE_INDEX, average_precision, confusion_matrix, iou_per_class, trapezoid_auc


@dataclass(frozen=True)
class ImageNetEvalConfig:
    """``explain_eval.imagenet``: a timm ImageNet model on ILSVRC2012 val and gtsegs_ijcv.mat, as the paper."""

    model: str = knob("timm ViT name, e.g. vit_base_patch16_224")
    pretrained: Union[bool, str] = knob("true (timm hub, needs internet) or a local checkpoint path")
    image_size: int = knob("input side, px", 16, 2048)
    val_root: Optional[str] = knob("ILSVRC2012 val: class folders, or flat files with labels_file (null: skip)")
    labels_file: Optional[str] = knob('"<file name> <class index>" per line, for a flat val_root')
    segmentation_file: Optional[str] = knob("gtsegs_ijcv.mat for the segmentation test (null: skip)")


@dataclass(frozen=True)
class ExplainEvalConfig:
    """The ``explain_eval`` section: which methods, on which images, in batches of what size."""

    source: Literal["dataset", "imagenet"] = knob("dataset: the classifier on dataset.root (multi-label rule); imagenet: see imagenet")
    methods: list[str] = knob("registered explanation methods to evaluate", choices=method_names)
    split: str = knob("split of dataset.root evaluated (source: dataset)")
    max_images: int = knob("at most this many images (0: all)", 0)
    batch_size: int = knob("images explained per batch", 1)
    max_forward_batch: int = knob("perturbed images per forward pass", 1)
    start_layer: int = knob("first block of the chain, for the methods that chain blocks", 0)
    imagenet: ImageNetEvalConfig = knob("the ImageNet source's model and files")

Rule = Literal["single_label", "multi_label"]
Mode = Literal["predicted", "target"]
ApRule = Literal["pooled", "mean_of_classes"]
Explainer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Normalise = Callable[[torch.Tensor], torch.Tensor]

SIGNS = ("positive", "negative")
RULES = ("single_label", "multi_label")
MODES = ("predicted", "target")
AP_RULES = ("pooled", "mean_of_classes")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# --- shared pieces ----------------------------------------------------------------------------


def prepare_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Relevance (R, h, w) to (R, *size) scores in [0, 1]: bilinear upsampling, then per-map min-max."""
    maps = maps.float()
    if tuple(maps.shape[-2:]) == tuple(size):
        return min_max(maps)  # LRP maps are already at input resolution
    return upsample_min_max(maps, size)


def explained_rows(logits: torch.Tensor, labels: torch.Tensor | None, mode: Mode, rule: Rule) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, class id) of every explained row, as described in the module docstring."""
    _check_choice("mode", mode, MODES)
    _check_choice("rule", rule, RULES)
    images = torch.arange(logits.shape[0], device=logits.device)
    if mode == "predicted":
        return images, logits.argmax(dim=1)
    if labels is None:
        raise ValueError("mode 'target' needs ground-truth labels in the batch ('labels')")
    if rule == "single_label":
        return images, labels.long()
    pairs = torch.nonzero(labels > 0)  # row-major: image-major, classes ascending
    return pairs[:, 0], pairs[:, 1]


def is_correct(logits: torch.Tensor, class_ids: torch.Tensor, labels: torch.Tensor, rule: Rule) -> torch.Tensor:
    """(R,) bool: is each row's prediction right under `rule` (module docstring)?

    `labels` is (R,) class indices for "single_label", (R, C) multi-hot for "multi_label".
    """
    if rule == "single_label":
        return logits.argmax(dim=1) == labels
    if rule == "multi_label":
        column = class_ids.long()[:, None]
        return (logits.gather(1, column)[:, 0] > 0) & (labels.gather(1, column)[:, 0] > 0)
    raise ValueError(f"rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")


def _forward(model: Callable[[torch.Tensor], torch.Tensor], normalise: Normalise, images: torch.Tensor, max_batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(normalise(chunk)) for chunk in images.split(max_batch)])


# --- perturbation test ------------------------------------------------------------------------


def step_fractions(num_steps: int = 10) -> np.ndarray:
    """Fractions of pixels removed at each step: 0, 1/num_steps, … (0, 0.1 … 0.9 by default)."""
    return np.arange(num_steps) / num_steps


def pixels_removed(num_pixels: int, num_steps: int = 10) -> list[int]:
    """Pixels removed at each step, floor(k · num_pixels / num_steps), in exact integer arithmetic.

    Equals the reference's int(num_pixels * fraction) for 224² (no float rounding surprises).
    """
    return [k * num_pixels // num_steps for k in range(num_steps)]


def removal_ranks(scores: torch.Tensor, sign: str) -> torch.Tensor:
    """(R, H, W) scores to (R, H·W) int: each pixel's position in the removal order.

    "positive" removes the most relevant pixel first, "negative" the least relevant first. Ties
    go by raster order (row-major index) in both tests: a stable sort, so results are
    deterministic and independent of the batch.
    """
    _check_choice("sign", sign, SIGNS)
    flat = scores.reshape(scores.shape[0], -1)
    order = torch.sort(flat, dim=1, descending=sign == "positive", stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device, dtype=torch.int32).expand(flat.shape[0], -1)
    return torch.empty(order.shape, dtype=torch.int32, device=flat.device).scatter_(1, order, positions)


def perturb(images: torch.Tensor, ranks: torch.Tensor, num_removed: torch.Tensor | int) -> torch.Tensor:
    """Zero (all channels of) the first `num_removed` pixels in removal order of each unnormalised image.

    images (R, 3, H, W); ranks (R, H·W) from :func:`removal_ranks`; num_removed an int or (R,).
    """
    rows, _, height, width = images.shape
    limit = torch.as_tensor(num_removed, device=ranks.device).reshape(-1, 1)
    keep = (ranks >= limit).reshape(rows, 1, height, width)
    return images * keep.to(images.dtype)


def perturbation_test(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    maps: torch.Tensor,
    class_ids: torch.Tensor,
    labels: torch.Tensor,
    normalise: Normalise,
    *,
    rule: Rule = "single_label",
    num_steps: int = 10,
    max_batch: int = 64,
    clean_logits: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Positive and negative perturbation tests of one batch of explained rows.

    images: (R, 3, H, W) unnormalised in [0, 1], one per row (repeat an image for several
    classes); maps: (R, h, w) relevance, raw or prepared; class_ids: (R,) explained classes;
    labels: per row, as :func:`is_correct` takes them; clean_logits: (R, C) logits of the
    unperturbed images if already computed (they are step 0 of both tests).

    All 2·(num_steps−1)·R perturbed images go through the model in chunks of `max_batch`.
    Returns {"positive": (num_steps, R) bool, "negative": (num_steps, R) bool}: correctness
    of every row at every step, for :class:`PerturbationAccumulator`.
    """
    _check_choice("rule", rule, RULES)
    if num_steps < 2:
        raise ValueError(f"num_steps must be at least 2 (the AUC needs two points), got {num_steps}")
    rows, _, height, width = images.shape
    if maps.shape[0] != rows or class_ids.shape[0] != rows or labels.shape[0] != rows:
        raise ValueError(f"images, maps, class_ids and labels must have one row each; got {rows}, {maps.shape[0]}, {class_ids.shape[0]}, {labels.shape[0]}")
    if rows == 0:
        return {sign: np.zeros((num_steps, 0), dtype=bool) for sign in SIGNS}
    device = images.device
    scores = prepare_maps(maps.to(device), (height, width))
    ranks = torch.stack([removal_ranks(scores, sign) for sign in SIGNS])  # (2, R, H·W)
    counts = torch.tensor(pixels_removed(height * width, num_steps), device=device)
    if clean_logits is None:
        clean_logits = _forward(model, normalise, images, max_batch)

    correct = torch.zeros(len(SIGNS), num_steps, rows, dtype=torch.bool, device=device)
    correct[:, 0] = is_correct(clean_logits, class_ids, labels, rule)[None]
    # Every (sign, step ≥ 1, row) job, cut into chunks: few, large forward passes whatever R is.
    jobs = torch.cartesian_prod(torch.arange(len(SIGNS)), torch.arange(1, num_steps), torch.arange(rows)).reshape(-1, 3).to(device)
    for chunk in jobs.split(max_batch):
        sign, step, row = chunk.unbind(1)
        perturbed = perturb(images[row], ranks[sign, row], counts[step])
        with torch.no_grad():
            logits = model(normalise(perturbed))
        correct[sign, step, row] = is_correct(logits, class_ids[row], labels[row], rule)
    correct = correct.cpu().numpy()
    return {sign: correct[i] for i, sign in enumerate(SIGNS)}


class PerturbationAccumulator:
    """Correct counts per step of the positive and negative tests, summed over batches."""

    def __init__(self, num_steps: int = 10) -> None:
        self.num_steps = num_steps
        self.correct = {sign: np.zeros(num_steps, dtype=np.int64) for sign in SIGNS}
        self.count = 0

    def update(self, correct: Mapping[str, np.ndarray]) -> None:
        """Add a :func:`perturbation_test` result: {sign: (num_steps, R) bool}."""
        shapes = {sign: np.shape(correct[sign]) for sign in SIGNS}
        if len(set(shapes.values())) != 1 or shapes["positive"][0] != self.num_steps:
            raise ValueError(f"expected two ({self.num_steps}, R) arrays, got shapes {shapes}")
        for sign in SIGNS:
            self.correct[sign] += np.asarray(correct[sign], dtype=np.int64).sum(axis=1)
        self.count += shapes["positive"][1]

    def merge(self, other: "PerturbationAccumulator") -> None:
        """Add another rank's counts (integers: the order of merging cannot matter)."""
        for sign in SIGNS:
            self.correct[sign] += other.correct[sign]
        self.count += other.count

    def accuracy(self, sign: str) -> np.ndarray:
        """Fraction of rows correct at each step (NaN before any update)."""
        _check_choice("sign", sign, SIGNS)
        return self.correct[sign] / self.count if self.count else np.full(self.num_steps, np.nan)

    def auc(self, sign: str) -> float:
        """Trapezoid area under accuracy over x = 0, 1/num_steps, …, times 100 (docs/methods.md, "Perturbation test")."""
        return 100.0 * trapezoid_auc(self.accuracy(sign), step_fractions(self.num_steps))

    def summary(self) -> dict[str, Any]:
        """JSON-ready: rows counted, fractions removed, and per sign the accuracy curve (percent) and AUC."""
        out: dict[str, Any] = {"count": self.count, "fractions": step_fractions(self.num_steps).tolist()}
        for sign in SIGNS:
            out[sign] = {"accuracy": [_finite(100.0 * a) for a in self.accuracy(sign)], "auc": _finite(self.auc(sign))}
        return out


# --- segmentation test ------------------------------------------------------------------------


def foreground(scores: torch.Tensor) -> torch.Tensor:
    """(R, H, W) bool: pixels whose score exceeds the mean of their own map (over all its pixels)."""
    return scores > scores.mean(dim=(-2, -1), keepdim=True)


def image_average_precision(scores: np.ndarray, mask: np.ndarray, rule: ApRule = "pooled") -> float:
    """AP of one image's pixel scores against its fg/bg mask (255 ignored); NaN if no pixel is labelled.

    Each pixel is scored twice: ``score`` as a foreground candidate, ``1 − score`` as a background
    candidate. "pooled" (default; docs/methods.md, "Segmentation test": one AP of the pixel scores; the reference code
    computes a single binary AP over the flattened two-channel (1 − map, map) scores against the
    one-hot mask) ranks all 2·H·W candidates together. "mean_of_classes" is the mean of the
    foreground AP and the background AP, skipping a class absent from the image.
    """
    _check_choice("ap rule", rule, AP_RULES)
    valid = mask != IGNORE_INDEX
    score = np.asarray(scores, dtype=np.float64)[valid]
    is_fg = np.asarray(mask)[valid] == 1
    if score.size == 0:
        return float("nan")
    if rule == "pooled":
        return average_precision(np.concatenate([score, 1.0 - score]), np.concatenate([is_fg, ~is_fg]))
    per_class = [average_precision(score, is_fg), average_precision(1.0 - score, ~is_fg)]
    return float(np.nanmean(per_class))


class SegmentationAccumulator:
    """Segmentation test over a dataset: confusion counts summed, per-image APs averaged at the end."""

    def __init__(self, ap_rule: ApRule = "pooled") -> None:
        _check_choice("ap_rule", ap_rule, AP_RULES)
        self.ap_rule = ap_rule
        self.confusion = np.zeros((2, 2), dtype=np.int64)  # [target, prediction], 0 = bg, 1 = fg
        self.aps: list[float] = []
        self.count = 0

    def update(self, scores: torch.Tensor, masks: torch.Tensor | np.ndarray) -> None:
        """Add maps prepared by :func:`prepare_maps` (R, H, W) and their masks (R, H, W): 0 bg, 1 fg, 255 ignored."""
        masks = torch.as_tensor(masks).cpu().numpy()
        if tuple(masks.shape) != tuple(scores.shape):
            raise ValueError(f"masks {tuple(masks.shape)} do not match maps {tuple(scores.shape)}")
        predictions = foreground(scores).cpu().numpy()
        self.confusion += confusion_matrix(predictions, masks, num_classes=2)[:, :2]
        for score, mask in zip(scores.float().cpu().numpy(), masks):
            ap = image_average_precision(score, mask, self.ap_rule)
            if not math.isnan(ap):  # images without a labelled pixel say nothing about ranking
                self.aps.append(ap)
        self.count += len(masks)

    def merge(self, other: "SegmentationAccumulator") -> None:
        """Add another rank's images (the mean AP is an exactly rounded sum: independent of order)."""
        self.confusion += other.confusion
        self.aps += other.aps
        self.count += other.count

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    @property
    def iou(self) -> np.ndarray:
        """(background IoU, foreground IoU) from the summed confusion counts."""
        return iou_per_class(self.confusion)

    @property
    def miou(self) -> float:
        """Mean of the two IoUs (NaN while either is undefined)."""
        return float(np.mean(self.iou))

    @property
    def mean_ap(self) -> float:
        return math.fsum(self.aps) / len(self.aps) if self.aps else float("nan")

    def summary(self) -> dict[str, Any]:
        """JSON-ready, in percent as the paper's Table 3."""
        iou = self.iou
        return {
            "count": self.count,
            "pixel_accuracy": _finite(100.0 * self.pixel_accuracy),
            "map": _finite(100.0 * self.mean_ap),
            "miou": _finite(100.0 * self.miou),
            "iou_background": _finite(100.0 * iou[0]),
            "iou_foreground": _finite(100.0 * iou[1]),
            "ap_rule": self.ap_rule,
        }


def class_masks(masks: torch.Tensor, class_ids: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """Class-index masks (R, H, W) to fg/bg masks of each row's class: 1 where label == class + offset, 255 kept."""
    target = (class_ids.long() + offset).reshape(-1, 1, 1).to(masks.device)
    binary = (masks.long() == target).to(torch.uint8)
    return torch.where(masks.long() == IGNORE_INDEX, IGNORE_INDEX, binary).to(torch.uint8)


# --- driver -----------------------------------------------------------------------------------


def evaluate_method(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    normalise: Normalise,
    explainer: Explainer,
    *,
    rule: Rule = "single_label",
    perturbation_modes: Sequence[Mode] = ("predicted", "target"),
    segmentation_mode: Mode | None = "predicted",
    num_steps: int = 10,
    max_batch: int = 64,
    mask_class_offset: int = 1,
    ap_rule: ApRule = "pooled",
    progress: Callable[[int], object] | None = None,
    group: Group = Group(),
) -> dict[str, Any]:
    """Run the perturbation tests (one per mode in `perturbation_modes`) and the segmentation test
    (explaining `segmentation_mode`; None skips it) over `batches` (format in the module docstring).

    The model (in eval mode) is run once per batch on the clean images; maps of a mode are
    computed once and shared by both tests. The explainer sees at most as many rows per call as
    the incoming batch has images (multi-label "target" rows are split into such chunks).
    `progress` is called with the number of images after each batch. With several ranks, each
    passes its own batches and the counts of all ranks are added up before the summary.

    Returns a JSON-ready dict: {"rule", "perturbation": {mode: PerturbationAccumulator.summary()},
    "segmentation": SegmentationAccumulator.summary() | {"mode"}}; sections that did not run are
    absent. Accuracies, AUCs and segmentation metrics are in percent.
    """
    _check_choice("rule", rule, RULES)
    for mode in perturbation_modes:
        _check_choice("perturbation mode", mode, MODES)
    if segmentation_mode is not None:
        _check_choice("segmentation_mode", segmentation_mode, MODES)
    device = next(model.parameters()).device
    perturbation = {mode: PerturbationAccumulator(num_steps) for mode in perturbation_modes}
    segmentation = SegmentationAccumulator(ap_rule) if segmentation_mode is not None else None
    modes = list(dict.fromkeys(perturbation_modes))
    if segmentation_mode is not None and segmentation_mode not in modes:
        modes.append(segmentation_mode)

    for batch in batches:
        images = batch["images"].to(device).float()
        labels = batch["labels"].to(device) if "labels" in batch else None
        masks = batch["masks"].to(device) if "masks" in batch else None
        if perturbation and labels is None:
            raise ValueError("the perturbation test needs ground-truth labels in every batch ('labels')")
        if segmentation is not None and masks is None:
            raise ValueError("the segmentation test needs masks in every batch ('masks')")
        size = tuple(images.shape[-2:])
        clean_logits = _forward(model, normalise, images, max_batch)
        for mode in modes:
            rows, class_ids = explained_rows(clean_logits, labels, mode, rule)
            if rows.numel() == 0:  # multi-label "target" batch without any present class
                continue
            chunks = zip(rows.split(len(images)), class_ids.split(len(images)))
            raw = torch.cat([explainer(normalise(images[part]), ids).detach() for part, ids in chunks])
            scores = prepare_maps(raw.to(device), size)
            if mode in perturbation:
                perturbation[mode].update(perturbation_test(
                    model, images[rows], scores, class_ids, labels[rows], normalise,
                    rule=rule, num_steps=num_steps, max_batch=max_batch, clean_logits=clean_logits[rows]))
            if segmentation is not None and mode == segmentation_mode:
                row_masks = masks[rows] if rule == "single_label" else class_masks(masks[rows], class_ids, mask_class_offset)
                segmentation.update(scores, row_masks)
        if progress is not None:
            progress(len(images))

    # Every rank's counts on every rank (all_gather), added in rank order: ranks 1.. into rank 0's.
    for other_perturbation, other_segmentation in group.gather((perturbation, segmentation))[1:]:
        for mode, accumulator in other_perturbation.items():
            perturbation[mode].merge(accumulator)
        if segmentation is not None:
            segmentation.merge(other_segmentation)
    result: dict[str, Any] = {"rule": rule}
    if perturbation:
        result["perturbation"] = {mode: acc.summary() for mode, acc in perturbation.items()}
    if segmentation is not None:
        result["segmentation"] = {"mode": segmentation_mode, **segmentation.summary()}
    return result


def _finite(value: float) -> float | None:
    """JSON has no NaN: undefined metrics become null."""
    value = float(value)
    return value if math.isfinite(value) else None
