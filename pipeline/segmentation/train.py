"""Training the segmentation network on label maps: per-sample augmentation and the loop."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.core.config import knob
from pipeline.core.distributed import Group, batch_share
from pipeline.core.trainer import Precision, Trainer, lr_factor
from pipeline.data.augment import epoch_batches, sample_rng, steps_per_epoch
from pipeline.data.preprocess import MEAN, normalise
from pipeline.segmentation.net import Segmenter, SegmenterConfig

IGNORE = 255


@dataclass(frozen=True)
class SegTrainConfig:
    """The ``train_seg`` section: the network, what it learns from, and how."""

    network: SegmenterConfig = knob("architecture: backbone, its weights, the ASPP head")
    supervision: Literal["pseudo", "ground_truth"] = knob("pseudo: random_walk's pseudo-masks; ground_truth: the real masks (the fully supervised upper bound)")
    splits: list[str] = knob("splits trained on (pseudo: must be among cams.splits)")
    epochs: int = knob("passes over the training images", 1)
    batch_size: int = knob("crops per step (the last partial batch is dropped: BatchNorm needs > 1)", 2)
    optimizer: Literal["sgd", "adamw"] = knob("sgd (momentum 0.9) or adamw")
    lr: float = knob("base learning rate of the backbone", 0.0, 10.0)
    new_layer_lr_mult: float = knob("the ASPP head and decoder learn this many times faster", 0.0, 1000.0)
    weight_decay: float = knob("L2 (sgd) or decoupled (adamw) weight decay", 0.0, 1.0)
    poly_power: float = knob("lr * (1 - step / steps) ** poly_power, per step", 0.0, 10.0)
    crop_size: int = knob("side of the square training crops, px (a multiple of the backbone's coarsest stride)", 16, 2048)
    scale_range: list[float] = knob("each image is resized by a factor drawn uniformly from [low, high] before cropping", 0.1, 4.0, length=2)
    hflip: bool = knob("mirror each crop with probability 1/2")
    seed: int = knob("head initialisation, sample order and augmentation", 0)
    amp: Precision = knob("mixed precision of the forward pass: off, bf16, or fp16 (with loss scaling); for CUDA")

    def check(self) -> None:
        if self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range {self.scale_range} must be [low, high] with low <= high")


def random_scale_crop(image: np.ndarray, label: np.ndarray, crop_size: int, scale_range: Sequence[float], hflip: bool,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Resize by a random factor (image bilinear, labels nearest), pad to the crop (image with the
    mean colour, labels with 255 = ignored), take a random crop_size square, maybe mirror it.

    `image` uint8 (H, W, 3), `label` uint8 (H, W); returns the crop's image and labels.
    """
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    factor = rng.uniform(scale_range[0], scale_range[1])
    height, width = (max(1, round(side * factor)) for side in image.shape[:2])
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    pad_y, pad_x = max(0, crop_size - height), max(0, crop_size - width)
    if pad_y or pad_x:
        fill = np.round(np.array(MEAN) * 255).astype(np.uint8)
        image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)))
        image[height:, :] = fill
        image[:, width:] = fill
        label = np.pad(label, ((0, pad_y), (0, pad_x)), constant_values=IGNORE)
    top = int(rng.integers(0, image.shape[0] - crop_size + 1))
    left = int(rng.integers(0, image.shape[1] - crop_size + 1))
    image = image[top:top + crop_size, left:left + crop_size]
    label = label[top:top + crop_size, left:left + crop_size]
    if hflip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def make_optimizer(net: Segmenter, config: SegTrainConfig) -> torch.optim.Optimizer:
    groups = [
        {"params": [p for p in net.backbone_parameters() if p.requires_grad], "lr": config.lr},
        {"params": [p for p in net.new_parameters() if p.requires_grad], "lr": config.lr * config.new_layer_lr_mult},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def train_segmenter(
    net: Segmenter,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    config: SegTrainConfig,
    device: str | torch.device = "cpu",
    group: Group = Group(),
    checkpoints: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train `net` in place with pixel-wise cross-entropy (255 ignored); per-epoch mean loss and lr.

    `images[i]` uint8 (H, W, 3) and `labels[i]` uint8 (H, W) with 0 background, k class k,
    255 ignored; any indexable works (e.g. a lazy reader), one item at a time. Sample order
    and each sample's crop are functions of (seed, epoch, index) (:func:`~pipeline.data.augment.sample_rng`).
    Each step averages over the labelled pixels of the whole global batch, whichever rank holds
    them. Poly decay per step; ``new_layer_lr_mult`` x lr on the head. With ``checkpoints`` (a folder), a
    rerun continues after the last finished epoch.
    """
    if len(images) != len(labels) or len(images) < config.batch_size:
        raise ValueError(f"need as many label maps as images and at least one batch ({config.batch_size}), "
                         f"got {len(images)} images and {len(labels)} label maps")
    multiple = max(net.backbone.strides)
    if config.crop_size % multiple:
        raise ValueError(f"train_seg.crop_size={config.crop_size} must be a multiple of the backbone's stride {multiple}")
    device = torch.device(device)
    net.to(device).train()
    trainer = Trainer(net, make_optimizer(net, config), device, group, config.amp, checkpoints)
    base_lrs = [param_group["lr"] for param_group in trainer.optimizer.param_groups]
    n = len(images)
    steps = steps_per_epoch(n, config.batch_size)
    total = steps * config.epochs
    first_epoch, history = trainer.resume()
    for epoch in range(first_epoch, config.epochs):
        loss_sum = torch.zeros((), dtype=torch.float64)
        for i, batch in enumerate(epoch_batches(n, config.batch_size, config.seed, epoch)):
            crops = [random_scale_crop(np.asarray(images[j]), np.asarray(labels[j]), config.crop_size, config.scale_range,
                                       config.hflip, sample_rng(config.seed, epoch, j)) for j in batch_share(batch, group)]
            image_batch = torch.from_numpy(np.stack([c[0] for c in crops])).permute(0, 3, 1, 2)
            target = torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.int64)).to(device)
            for param_group, base in zip(trainer.optimizer.param_groups, base_lrs):
                param_group["lr"] = base * lr_factor(epoch * steps + i, total, power=config.poly_power)
            with trainer.autocast():
                logits = trainer.network(normalise(image_batch.to(device)))
            # A batch with no labelled pixel (possible with pseudo-masks) contributes a zero loss, not NaN.
            labelled = trainer.global_count((target != IGNORE).sum().double())
            local_sum = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
            trainer.step(trainer.share_of_mean(local_sum, labelled))
            loss_sum += local_sum.detach().double().cpu() / max(float(labelled), 1.0)
            if progress is not None:
                progress(len(batch))
        history.append({"epoch": epoch + 1, "loss": float(group.sum(loss_sum)) / steps, "lr": trainer.optimizer.param_groups[0]["lr"]})
        trainer.save(epoch + 1, history)
    net.eval()
    return history
