"""AffinityNet: pair targets from confident labels, the network, its loss and training (Ahn & Kwak,
CVPR 2018; docs/methods.md, "Affinity labels" and "AffinityNet and its loss").

Everything here lives on the feature grid (h, w) = input size / backbone stride. Label maps
follow the project convention: uint8, 0 = background, k = class label, 255 = neutral.
"""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.augment import color_jitter, random_hflip
from pipeline.preprocess import normalise
from pipeline.errors import InputError
from pipeline.models import feature_backbone, load_classifier

NEUTRAL = 255

# Pair codes: what a pair (pixel, pixel + offset) teaches the network.
NEGATIVE = 0  # both confident, different labels: affinity -> 0
BG_POSITIVE = 1  # both confident background: affinity -> 1
FG_POSITIVE = 2  # both confident, same foreground class: affinity -> 1
IGNORE = 255  # partner outside the image, or either end neutral
_CODE_NAMES = {NEGATIVE: "negative", BG_POSITIVE: "bg_positive", FG_POSITIVE: "fg_positive", IGNORE: "ignore"}

_STABILISER = 1e-5  # keeps log W and log(1 - W) finite at W = 0 or 1 (reference value)


def half_disc_offsets(radius: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) with 0 < sqrt(dy^2 + dx^2) < radius, one of each +/- pair.

    The half kept is dy > 0, plus dy == 0 with dx > 0 (the pixel's right and the rows
    below it), sorted by (dy, dx). Radius 5 gives 34 offsets.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    return [
        (dy, dx)
        for dy in range(radius)
        for dx in range(-radius + 1, radius)
        if (dy > 0 or dx > 0) and dy * dy + dx * dx < radius * radius
    ]


def _reach(offsets: Sequence[tuple[int, int]]) -> int:
    return max((max(abs(dy), abs(dx)) for dy, dx in offsets), default=0)


def pair_codes(labels: np.ndarray, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Code (P, h, w) uint8 of each pair (pixel (y, x), pixel (y + dy, x + dx)) for offsets[p] = (dy, dx)."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be a uint8 (h, w) map, got {labels.dtype} {labels.shape}")
    h, w = labels.shape
    reach = _reach(offsets)
    padded = np.pad(labels, reach, constant_values=NEUTRAL)  # outside the image = neutral = ignored
    codes = np.empty((len(offsets), h, w), np.uint8)
    for p, (dy, dx) in enumerate(offsets):
        other = padded[reach + dy : reach + dy + h, reach + dx : reach + dx + w]
        kind = np.where(labels != other, NEGATIVE, np.where(labels == 0, BG_POSITIVE, FG_POSITIVE))
        codes[p] = np.where((labels != NEUTRAL) & (other != NEUTRAL), kind, IGNORE)
    return codes


def pair_counts(codes: np.ndarray | torch.Tensor) -> dict[str, int]:
    """Number of pairs of each kind: keys negative, bg_positive, fg_positive, ignore."""
    codes = np.asarray(codes)
    return {name: int(np.count_nonzero(codes == code)) for code, name in _CODE_NAMES.items()}


class AffinityNet(nn.Module):
    """A backbone's feature map followed by two 1x1 convolutions (the seed report's head).

    `backbone` maps images (B, 3, H, W) to features (B, in_channels, h, w), e.g. the hybrid
    ViT's CNN stem. The head is conv1x1 -> ReLU -> conv1x1: without the ReLU the two
    convolutions would collapse into one linear map; the last layer stays linear so the
    embedding can take any sign (only |f_i - f_j| matters).
    """

    def __init__(self, backbone: nn.Module, in_channels: int, hidden_channels: int, out_channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, out_channels, kernel_size=1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def new_parameters(self) -> Iterator[nn.Parameter]:
        """The head's parameters (trained with a higher lr; docs/methods.md, "AffinityNet and its loss")."""
        return self.head.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()


def pairwise_affinity(features: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """W (B, P, h, w) = exp(-mean_c |f_i - f_j|) for j = i + offsets[p]; 0 where j is outside the grid."""
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(features.shape)}")
    h, w = features.shape[2:]
    reach = _reach(offsets)
    padded = F.pad(features, (reach, reach, reach, reach))
    out = []
    for dy, dx in offsets:
        other = padded[:, :, reach + dy : reach + dy + h, reach + dx : reach + dx + w]
        inside = torch.zeros(h, w, dtype=torch.bool, device=features.device)
        inside[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = True
        out.append(torch.where(inside, torch.exp(-(features - other).abs().mean(dim=1)), 0.0))
    return torch.stack(out, dim=1)


def affinity_loss(
    affinity: torch.Tensor,
    codes: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 2.0),
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = w_bg L_bg+ + w_fg L_fg+ + w_neg L- over all pairs of the batch, and its parts as floats.

    L+ = -mean log(W + 1e-5) over that positive set, L- = -mean log(1 - W + 1e-5) over the
    negatives; an empty set contributes 0. Default weights (1, 1, 2) are the seed report's;
    the reference's (1/4, 1/4, 1/2) is the same loss divided by 4 (equivalent to lr / 4).
    """
    if affinity.shape != codes.shape:
        raise ValueError(f"affinity {tuple(affinity.shape)} and codes {tuple(codes.shape)} differ in shape")
    codes = codes.to(affinity.device)
    total = affinity.sum() * 0.0  # keeps the graph when every set is empty
    parts: dict[str, float] = {}
    for (code, positive), weight in zip(((BG_POSITIVE, True), (FG_POSITIVE, True), (NEGATIVE, False)), weights):
        selected = affinity[codes == code]
        if selected.numel() == 0:
            term = affinity.new_zeros(())
        elif positive:
            term = -torch.log(selected + _STABILISER).mean()
        else:
            term = -torch.log(1.0 - selected + _STABILISER).mean()
        total = total + weight * term
        parts[_CODE_NAMES[code]] = float(term.detach())
    parts["loss"] = float(total.detach())
    return total, parts


def augment(
    images: torch.Tensor,
    labels: np.ndarray,
    generator: torch.Generator,
    hflip: bool = True,
    color_jitter_strength: float = 0.3,
) -> tuple[torch.Tensor, np.ndarray]:
    """Random horizontal flip (image and label map together) and colour jitter (image only).

    `images` uint8 (B, 3, H, W), `labels` uint8 (B, h, w); returns float images in [0, 1] and
    labels. Pair codes must be recomputed from the flipped label map (a flip sends offset
    (dy, dx) to (dy, -dx), which leaves the half-disc). Jitter draws brightness, contrast
    and saturation factors uniformly in [1 - s, 1 + s] per image (as the classifier's training).
    """
    images = images.float() / 255.0
    labels = labels.copy()
    if hflip:
        images, flip = random_hflip(images, generator)
        labels[flip.numpy()] = labels[flip.numpy()][:, :, ::-1]
    return color_jitter(images, color_jitter_strength, generator), labels


def train_affinitynet(
    net: AffinityNet,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    offsets: Sequence[tuple[int, int]],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 1e-4,
    momentum: float = 0.9,
    poly_power: float = 0.9,
    new_layer_lr_mult: float = 10.0,
    hflip: bool = True,
    color_jitter: float = 0.3,
    frozen_norm: bool = False,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 2.0),
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train `net` in place on confident label maps; returns per-epoch means of the loss and its parts.

    `images[i]`: uint8 (H, W, 3); `labels[i]`: uint8 (h, w) confident labels on the feature grid
    of that image (any indexable works, e.g. a zarr array, read one item at a time). SGD with
    momentum, poly decay lr * (1 - it / max_it) ** poly_power per iteration, `new_layer_lr_mult`
    x lr on the head (docs/methods.md, "AffinityNet and its loss"). Shuffling and augmentation draw from a generator seeded
    with `seed`, so a run on CPU is reproducible from the same initial weights. `progress`,
    if given, is called with the batch size after each batch. `frozen_norm` keeps the backbone's
    BatchNorm statistics as the classifier left them (batches of 8 estimate them poorly).
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many label maps as images (and at least one), got {len(images)} and {len(labels)}")
    net.to(device).train()
    if frozen_norm:
        for module in net.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    groups = [
        {"params": [p for p in net.backbone_parameters() if p.requires_grad], "lr": lr},
        {"params": [p for p in net.new_parameters() if p.requires_grad], "lr": lr * new_layer_lr_mult},
    ]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    generator = torch.Generator().manual_seed(seed)
    n = len(images)
    batches_per_epoch = -(-n // batch_size)
    max_iterations = epochs * batches_per_epoch
    iteration = 0
    history = []
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            batch = torch.from_numpy(np.stack([np.asarray(images[i]) for i in index])).permute(0, 3, 1, 2)
            batch_labels = np.stack([np.asarray(labels[i]) for i in index])
            batch, batch_labels = augment(batch, batch_labels, generator, hflip, color_jitter)
            codes = torch.from_numpy(np.stack([pair_codes(label, offsets) for label in batch_labels]))
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * (1.0 - iteration / max_iterations) ** poly_power
            features = net(normalise(batch.to(device), mean, std))
            if features.shape[2:] != codes.shape[2:]:
                raise ValueError(f"feature grid {tuple(features.shape[2:])} != label grid {tuple(codes.shape[2:])}")
            loss, parts = affinity_loss(pairwise_affinity(features, offsets), codes, loss_weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            iteration += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            if progress is not None:
                progress(len(index))
        record = {key: value / batches_per_epoch for key, value in sums.items()}
        history.append({"epoch": epoch + 1, **record, "lr": optimizer.param_groups[0]["lr"]})
    return history


@torch.no_grad()
def predict_affinity(net: AffinityNet, images: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Affinities (B, P, h, w) of normalised images (B, 3, H, W), in eval mode (the net's mode is restored)."""
    was_training = net.training
    net.eval()
    try:
        return pairwise_affinity(net(images), offsets)
    finally:
        net.train(was_training)


def affinity_grid(net: AffinityNet, image_size: int, device: torch.device | str = "cpu") -> tuple[int, int]:
    """The (h, w) feature grid `net` produces for square inputs of `image_size`."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        shape = net(torch.zeros(1, 3, image_size, image_size, device=device)).shape[-2:]
    net.train(was_training)
    return tuple(shape)


def mean_affinity(affinity: np.ndarray, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """(h, w) mean affinity of each cell to its in-image partners, in both directions of every offset."""
    total = np.zeros(affinity.shape[1:], np.float64)
    count = np.zeros(affinity.shape[1:], np.float64)
    height, width = affinity.shape[1:]
    for k, (dy, dx) in enumerate(offsets):
        ys, xs = slice(max(0, -dy), height - max(0, dy)), slice(max(0, -dx), width - max(0, dx))
        yt, xt = slice(max(0, dy), height - max(0, -dy)), slice(max(0, dx), width - max(0, -dx))
        total[ys, xs] += affinity[k][ys, xs]
        count[ys, xs] += 1
        total[yt, xt] += affinity[k][ys, xs]  # the same pair seen from its other end
        count[yt, xt] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def build_affinitynet(classifier_path: str | os.PathLike, image_size: int, hidden: int, out: int, device: torch.device) -> AffinityNet:
    """AffinityNet over the trained classifier's backbone (hybrid: CNN stem; plain ViT: token map)."""
    classifier, _ = load_classifier(classifier_path, device)
    backbone, channels, _ = feature_backbone(classifier, image_size)
    return AffinityNet(backbone, channels, hidden, out).to(device)


def load_affinitynet(path: str | os.PathLike, classifier_path: str | os.PathLike, device: torch.device) -> tuple[AffinityNet, dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found: run `dvc repro train_aff` (or `dvc pull`) first")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    net = build_affinitynet(classifier_path, meta["image_size"], meta["hidden_channels"], meta["out_channels"], device)
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval(), meta
