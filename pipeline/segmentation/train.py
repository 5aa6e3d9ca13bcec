"""Training the segmentation network on label maps: per-sample augmentation and the loop."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.config import knob
from pipeline.preprocess import MEAN, normalise
from pipeline.segmentation.net import Segmenter, SegmenterConfig
from pipeline.training import lr_factor

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

    def check(self) -> None:
        if self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range {self.scale_range} must be [low, high] with low <= high")


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one training sample: a function of (seed, epoch, index) only, so the
    crops a sample gets do not depend on the batch size, the sample order or the process count."""
    return np.random.default_rng([seed, epoch, index])


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
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train `net` in place with pixel-wise cross-entropy (255 ignored); per-epoch mean loss and lr.

    `images[i]` uint8 (H, W, 3) and `labels[i]` uint8 (H, W) with 0 background, k class k,
    255 ignored; any indexable works (e.g. a lazy reader), one item at a time. Sample order
    comes from a generator seeded with ``config.seed``; each sample's crop from
    :func:`sample_rng`. Poly decay per step; ``new_layer_lr_mult`` x lr on the head.
    """
    if len(images) != len(labels) or len(images) < config.batch_size:
        raise ValueError(f"need as many label maps as images and at least one batch ({config.batch_size}), "
                         f"got {len(images)} images and {len(labels)} label maps")
    multiple = max(net.backbone.strides)
    if config.crop_size % multiple:
        raise ValueError(f"train_seg.crop_size={config.crop_size} must be a multiple of the backbone's stride {multiple}")
    net.to(device).train()
    optimizer = make_optimizer(net, config)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    order_generator = torch.Generator().manual_seed(config.seed)
    n = len(images)
    steps_per_epoch = n // config.batch_size
    total = steps_per_epoch * config.epochs
    step = 0
    history = []
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=order_generator).tolist()
        losses = []
        for start in range(0, steps_per_epoch * config.batch_size, config.batch_size):
            crops = [random_scale_crop(np.asarray(images[i]), np.asarray(labels[i]), config.crop_size, config.scale_range,
                                       config.hflip, sample_rng(config.seed, epoch, i)) for i in order[start:start + config.batch_size]]
            batch = torch.from_numpy(np.stack([c[0] for c in crops])).permute(0, 3, 1, 2)
            target = torch.from_numpy(np.stack([c[1] for c in crops]).astype(np.int64)).to(device)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr_factor(step, total, power=config.poly_power)
            logits = net(normalise(batch.to(device)))
            # A batch with no labelled pixel (possible with pseudo-masks) contributes a zero loss, not NaN.
            loss = F.cross_entropy(logits, target, ignore_index=IGNORE) if (target != IGNORE).any() else logits.sum() * 0.0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            if progress is not None:
                progress(len(crops))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"]})
    net.eval()
    return history

