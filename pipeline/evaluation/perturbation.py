"""The perturbation test (Chefer et al., CVPR 2021; docs/methods.md, "Evaluating explanations"):
remove the most (positive) or least (negative) relevant pixels step by step and track whether
the model stays correct. Also the pieces both explanation tests share: which rows are
explained, the correctness rule, and map preparation (formats: pipeline/evaluation/explanations.py).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from pipeline.core.metrics import trapezoid_auc
from pipeline.seeds.maps import min_max, upsample_min_max

Rule = Literal["single_label", "multi_label"]
Mode = Literal["predicted", "target"]
Explainer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Normalise = Callable[[torch.Tensor], torch.Tensor]

SIGNS = ("positive", "negative")
RULES = ("single_label", "multi_label")
MODES = ("predicted", "target")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")



def finite(value: float) -> float | None:
    """JSON has no NaN: undefined metrics become null."""
    value = float(value)
    return value if math.isfinite(value) else None


# --- shared pieces ----------------------------------------------------------------------------


def prepare_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Relevance (R, h, w) to (R, *size) scores in [0, 1]: bilinear upsampling, then per-map min-max."""
    maps = maps.float()
    if tuple(maps.shape[-2:]) == tuple(size):
        return min_max(maps)  # LRP maps are already at input resolution
    return upsample_min_max(maps, size)


def explained_rows(logits: torch.Tensor, labels: torch.Tensor | None, mode: Mode, rule: Rule) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, class id) of every explained row, as described in the module docstring."""
    check_choice("mode", mode, MODES)
    check_choice("rule", rule, RULES)
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


def forward_logits(model: Callable[[torch.Tensor], torch.Tensor], normalise: Normalise, images: torch.Tensor, max_batch: int) -> torch.Tensor:
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
    check_choice("sign", sign, SIGNS)
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
    check_choice("rule", rule, RULES)
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
        clean_logits = forward_logits(model, normalise, images, max_batch)

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
        check_choice("sign", sign, SIGNS)
        return self.correct[sign] / self.count if self.count else np.full(self.num_steps, np.nan)

    def auc(self, sign: str) -> float:
        """Trapezoid area under accuracy over x = 0, 1/num_steps, …, times 100 (docs/methods.md, "Perturbation test")."""
        return 100.0 * trapezoid_auc(self.accuracy(sign), step_fractions(self.num_steps))

    def summary(self) -> dict[str, Any]:
        """JSON-ready: rows counted, fractions removed, and per sign the accuracy curve (percent) and AUC."""
        out: dict[str, Any] = {"count": self.count, "fractions": step_fractions(self.num_steps).tolist()}
        for sign in SIGNS:
            out[sign] = {"accuracy": [finite(100.0 * a) for a in self.accuracy(sign)], "auc": finite(self.auc(sign))}
        return out
