"""Training AffinityNet on pair targets: the loss and the loop."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.affinity.net import AffinityNet, pairwise_affinity
from pipeline.affinity.pairs import CODE_NAMES, BG_POSITIVE, FG_POSITIVE, NEGATIVE, pair_codes
from pipeline.augment import augment
from pipeline.config import knob
from pipeline.preprocess import normalise
from pipeline.training import lr_factor

# Weights of L_bg+, L_fg+ and L- (the seed report's; the reference's 1/4, 1/4, 1/2 is the same loss / 4).
LOSS_WEIGHTS = (1.0, 1.0, 2.0)
_STABILISER = 1e-5  # keeps log W and log(1 - W) finite at W = 0 or 1 (reference value)


def affinity_loss(
    affinity: torch.Tensor,
    codes: torch.Tensor,
    weights: tuple[float, float, float] = LOSS_WEIGHTS,
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
        parts[CODE_NAMES[code]] = float(term.detach())
    parts["loss"] = float(total.detach())
    return total, parts


@dataclass(frozen=True)
class AffinityTrainConfig:
    """The ``train_aff`` section: AffinityNet's head and how it learns from the pair targets."""

    epochs: int = knob("passes over the aff_pairs images", 1)
    lr: float = knob("base learning rate of the backbone (SGD, momentum 0.9)", 0.0, 10.0)
    batch_size: int = knob("images per step", 1)
    weight_decay: float = knob("L2 weight decay", 0.0, 1.0)
    poly_power: float = knob("lr * (1 - step / steps) ** poly_power, per step", 0.0, 10.0)
    new_layer_lr_mult: float = knob("the two new 1x1 convolutions learn this many times faster", 0.0, 1000.0)
    hidden_channels: int = knob("width of the head's hidden 1x1 convolution", 1)
    out_channels: int = knob("width of the affinity embedding", 1)
    freeze_backbone_norm: bool = knob("keep the backbone's BatchNorm statistics as the classifier left them")
    hflip: bool = knob("random horizontal mirror of image and labels")
    color_jitter: float = knob("brightness, contrast and saturation factors in [1 - s, 1 + s]", 0.0, 1.0)
    seed: int = knob("the head's initialisation, shuffling and augmentation", 0)


def train_affinitynet(
    net: AffinityNet,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    offsets: Sequence[tuple[int, int]],
    config: AffinityTrainConfig,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train `net` in place on confident label maps; returns per-epoch means of the loss and its parts.

    `images[i]`: uint8 (H, W, 3); `labels[i]`: uint8 (h, w) confident labels on the feature grid
    of that image (any indexable works, e.g. a zarr array, read one item at a time). SGD with
    momentum 0.9, poly decay per iteration, `new_layer_lr_mult` x lr on the head (docs/methods.md,
    "AffinityNet and its loss"). Shuffling and augmentation draw from a generator seeded with
    `config.seed`, so a run on CPU is reproducible from the same initial weights. `progress`, if
    given, is called with the batch size after each batch. `freeze_backbone_norm` keeps the
    backbone's BatchNorm statistics as the classifier left them (batches of 8 estimate them poorly).
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many label maps as images (and at least one), got {len(images)} and {len(labels)}")
    net.to(device).train()
    if config.freeze_backbone_norm:
        for module in net.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    groups = [
        {"params": [p for p in net.backbone_parameters() if p.requires_grad], "lr": config.lr},
        {"params": [p for p in net.new_parameters() if p.requires_grad], "lr": config.lr * config.new_layer_lr_mult},
    ]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    generator = torch.Generator().manual_seed(config.seed)
    n = len(images)
    batch_size = config.batch_size
    batches_per_epoch = -(-n // batch_size)
    max_iterations = config.epochs * batches_per_epoch
    iteration = 0
    history = []
    for epoch in range(config.epochs):
        sums: dict[str, float] = {}
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            batch = torch.from_numpy(np.stack([np.asarray(images[i]) for i in index])).permute(0, 3, 1, 2)
            batch_labels = np.stack([np.asarray(labels[i]) for i in index])
            batch, batch_labels = augment(batch, config.hflip, config.color_jitter, generator, batch_labels)
            codes = torch.from_numpy(np.stack([pair_codes(label, offsets) for label in batch_labels]))
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr_factor(iteration, max_iterations, power=config.poly_power)
            features = net(normalise(batch.to(device)))
            if features.shape[2:] != codes.shape[2:]:
                raise ValueError(f"feature grid {tuple(features.shape[2:])} != label grid {tuple(codes.shape[2:])}")
            loss, parts = affinity_loss(pairwise_affinity(features, offsets), codes, LOSS_WEIGHTS)
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
