"""AffinityNet: a backbone's features, a 1x1-conv head, and affinities between grid cells."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.classifier.model import feature_backbone, load_classifier
from pipeline.core.errors import InputError
from pipeline.core.eval_mode import eval_mode
from pipeline.refine.affinity.pairs import reach


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
    extent = reach(offsets)
    padded = F.pad(features, (extent, extent, extent, extent))
    out = []
    for dy, dx in offsets:
        other = padded[:, :, extent + dy : extent + dy + h, extent + dx : extent + dx + w]
        inside = torch.zeros(h, w, dtype=torch.bool, device=features.device)
        inside[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = True
        out.append(torch.where(inside, torch.exp(-(features - other).abs().mean(dim=1)), 0.0))
    return torch.stack(out, dim=1)


@torch.no_grad()
def predict_affinity(net: AffinityNet, images: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Affinities (B, P, h, w) of normalised images (B, 3, H, W), in eval mode (the net's mode is restored)."""
    with eval_mode(net):
        return pairwise_affinity(net(images), offsets)


def affinity_grid(net: AffinityNet, image_size: int, device: torch.device | str = "cpu") -> tuple[int, int]:
    """The (h, w) feature grid `net` produces for square inputs of `image_size`."""
    with eval_mode(net), torch.no_grad():
        return tuple(net(torch.zeros(1, 3, image_size, image_size, device=device)).shape[-2:])


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
    """The trained network (eval mode) and its meta: input ``image_size``, head widths, and the
    pair ``radius`` it was trained on, which the random walk reuses."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found: run `dvc repro train_aff` (or `dvc pull`) first")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    if "radius" not in meta:  # written before the checkpoint carried the radius its pairs had
        raise InputError(f"{path} does not record the pair radius it was trained with; rerun `dvc repro train_aff`")
    net = build_affinitynet(classifier_path, meta["image_size"], meta["hidden_channels"], meta["out_channels"], device)
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval(), meta
