"""Training AffinityNet on pair targets: the loss and the loop."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.core.config import knob
from pipeline.core.distributed import Group, batch_share
from pipeline.core.trainer import Precision, Trainer, lr_factor
from pipeline.data.augment import augment, epoch_batches, sample_rng, steps_per_epoch
from pipeline.data.preprocess import normalise
from pipeline.refine.affinity.net import AffinityNet, pairwise_affinity
from pipeline.refine.affinity.pairs import BG_POSITIVE, CODE_NAMES, FG_POSITIVE, NEGATIVE, pair_codes

# Weights of L_bg+, L_fg+ and L- (the seed report's; the reference's 1/4, 1/4, 1/2 is the same loss / 4).
LOSS_WEIGHTS = (1.0, 1.0, 2.0)
_STABILISER = 1e-5  # keeps log W and log(1 - W) finite at W = 0 or 1 (reference value)
_SETS = (BG_POSITIVE, FG_POSITIVE, NEGATIVE)


def pair_counts(codes: torch.Tensor) -> torch.Tensor:
    """How many pairs of each kind (bg+, fg+, -) ``codes`` holds, as float64 (3,)."""
    return torch.stack([(codes == code).sum() for code in _SETS]).double()


def affinity_loss(
    affinity: torch.Tensor,
    codes: torch.Tensor,
    weights: tuple[float, float, float] = LOSS_WEIGHTS,
    counts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = w_bg L_bg+ + w_fg L_fg+ + w_neg L- over all pairs of the batch, and its parts as floats.

    L+ = -mean log(W + 1e-5) over that positive set, L- = -mean log(1 - W + 1e-5) over the
    negatives; an empty set contributes 0. Default weights (1, 1, 2) are the seed report's;
    the reference's (1/4, 1/4, 1/2) is the same loss divided by 4 (equivalent to lr / 4).
    ``counts`` (3,): the sizes of the three sets in the whole global batch when ``codes`` is one
    rank's slice of it; each mean then divides this slice's sum by them, and the ranks' losses
    add up to the global batch's (default: this batch's own counts).
    """
    if affinity.shape != codes.shape:
        raise ValueError(f"affinity {tuple(affinity.shape)} and codes {tuple(codes.shape)} differ in shape")
    codes = codes.to(affinity.device)
    if counts is None:
        counts = pair_counts(codes)
    total = affinity.sum() * 0.0  # keeps the graph when every set is empty
    parts: dict[str, float] = {}
    for (code, positive), weight, count in zip(((BG_POSITIVE, True), (FG_POSITIVE, True), (NEGATIVE, False)), weights, counts.tolist()):
        selected = affinity[codes == code]
        probability = selected if positive else 1.0 - selected
        term = -torch.log(probability + _STABILISER).sum() / max(count, 1.0)
        total = total + weight * term
        parts[CODE_NAMES[code]] = float(term.detach())
    parts["loss"] = float(total.detach())
    return total, parts


@dataclass(frozen=True)
class AffinityTrainConfig:
    """The ``train_aff`` section: AffinityNet's head and how it learns from the pair targets."""

    epochs: int = knob("passes over the aff_pairs images", 1)
    lr: float = knob("base learning rate of the backbone (SGD, momentum 0.9)", 0.0, 10.0)
    batch_size: int = knob("images per step (the last partial batch is dropped, as in every training loop)", 1)
    weight_decay: float = knob("L2 weight decay", 0.0, 1.0)
    poly_power: float = knob("lr * (1 - step / steps) ** poly_power, per step", 0.0, 10.0)
    new_layer_lr_mult: float = knob("the two new 1x1 convolutions learn this many times faster", 0.0, 1000.0)
    hidden_channels: int = knob("width of the head's hidden 1x1 convolution", 1)
    out_channels: int = knob("width of the affinity embedding", 1)
    freeze_backbone_norm: bool = knob("keep the backbone's BatchNorm statistics as the classifier left them")
    hflip: bool = knob("random horizontal mirror of image and labels")
    color_jitter: float = knob("brightness, contrast and saturation factors in [1 - s, 1 + s]", 0.0, 1.0)
    seed: int = knob("the head's initialisation, shuffling and augmentation", 0)
    amp: Precision = knob("mixed precision of the forward pass: off, bf16, or fp16 (with loss scaling); for CUDA")


def make_optimizer(net: AffinityNet, config: AffinityTrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum 0.9; the new head learns ``new_layer_lr_mult`` times faster than the backbone."""
    groups = [
        {"params": [p for p in net.backbone_parameters() if p.requires_grad], "lr": config.lr},
        {"params": [p for p in net.new_parameters() if p.requires_grad], "lr": config.lr * config.new_layer_lr_mult},
    ]
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def train_affinitynet(
    net: AffinityNet,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    offsets: Sequence[tuple[int, int]],
    config: AffinityTrainConfig,
    device: str | torch.device = "cpu",
    group: Group = Group(),
    checkpoints: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train `net` in place on confident label maps; returns per-epoch means of the loss and its parts.

    `images[i]`: uint8 (H, W, 3); `labels[i]`: uint8 (h, w) confident labels on the feature grid
    of that image (any indexable works, e.g. a zarr array, read one item at a time). Optimiser:
    :func:`make_optimizer`, poly decay per iteration (docs/methods.md, "AffinityNet and its loss").
    Sample order and augmentation are functions of (seed, epoch, index): a CPU run is
    reproducible from the same initial weights, and several ranks (each a slice of every global
    batch, set sizes summed over ranks) train the same model up to float summation order.
    `progress` gets the images of each global batch. `freeze_backbone_norm`: see its knob.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many label maps as images (and at least one), got {len(images)} and {len(labels)}")
    device = torch.device(device)
    net.to(device).train()
    if config.freeze_backbone_norm:  # keep the classifier's BatchNorm statistics
        for module in (m for m in net.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            module.eval()
    trainer = Trainer(net, make_optimizer(net, config), device, group, config.amp, checkpoints)
    base_lrs = [param_group["lr"] for param_group in trainer.optimizer.param_groups]
    n = len(images)
    steps = steps_per_epoch(n, config.batch_size)
    max_iterations = config.epochs * steps
    first_epoch, history = trainer.resume()
    for epoch in range(first_epoch, config.epochs):
        sums = torch.zeros(len(_SETS) + 1, dtype=torch.float64)  # the three parts and the loss, this rank's shares
        for i, batch in enumerate(epoch_batches(n, config.batch_size, config.seed, epoch)):
            mine = batch_share(batch, group)  # may be empty on some ranks when a batch is smaller than the process count
            image_batch = torch.from_numpy(_stack([images[j] for j in mine], np.shape(images[0]))).permute(0, 3, 1, 2)
            label_batch = _stack([labels[j] for j in mine], np.shape(labels[0]))
            image_batch, label_batch = augment(image_batch, config.hflip, config.color_jitter,
                                               [sample_rng(config.seed, epoch, j) for j in mine], label_batch)
            codes = torch.from_numpy(_stack([pair_codes(label, offsets) for label in label_batch], (len(offsets), *label_batch.shape[1:])))
            for param_group, base in zip(trainer.optimizer.param_groups, base_lrs):
                param_group["lr"] = base * lr_factor(epoch * steps + i, max_iterations, power=config.poly_power)
            with trainer.autocast():
                features = trainer.network(normalise(image_batch.to(device)))
            if features.shape[2:] != codes.shape[2:]:
                raise ValueError(f"feature grid {tuple(features.shape[2:])} != label grid {tuple(codes.shape[2:])}")
            loss, parts = affinity_loss(pairwise_affinity(features.float(), offsets), codes, LOSS_WEIGHTS,
                                        trainer.global_count(pair_counts(codes)))
            trainer.step(trainer.share_of_mean(loss, 1))
            sums += torch.tensor([parts[CODE_NAMES[code]] for code in _SETS] + [parts["loss"]], dtype=torch.float64)
            if progress is not None:
                progress(len(batch))
        means = (group.sum(sums) / steps).tolist()
        record = {CODE_NAMES[code]: value for code, value in zip(_SETS, means)} | {"loss": means[-1]}
        history.append({"epoch": epoch + 1, **record, "lr": trainer.optimizer.param_groups[0]["lr"]})
        trainer.save(epoch + 1, history)
    return history


def _stack(items: list, item_shape: tuple[int, ...]) -> np.ndarray:
    """uint8 items stacked along a new first axis; (0, *item_shape) for none (a rank's empty slice)."""
    return np.stack([np.asarray(item) for item in items]) if items else np.zeros((0, *item_shape), np.uint8)
