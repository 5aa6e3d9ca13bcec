"""Multi-label classifier training and inference on in-memory or streamed image batches."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.classifier.model import DemoHybridConfig
from pipeline.core.config import knob
from pipeline.core.distributed import Group, batch_share
from pipeline.core.eval_mode import eval_mode
from pipeline.core.metrics import mean_average_precision
from pipeline.core.progress import progress_bar
from pipeline.core.trainer import Precision, Trainer, lr_factor
from pipeline.data.augment import augment, epoch_batches, random_rescale, sample_rng, steps_per_epoch
from pipeline.data.preprocess import normalise


@dataclass(frozen=True)
class ClassifierConfig:
    """The ``train_cls`` section: which ViT, and how it learns from image-level labels."""

    model: str = knob("demo_hybrid, or any timm ViT: vit_small_patch16_224, deit_small_patch16_224, vit_base_r50_s16_384 ...")
    demo_hybrid: DemoHybridConfig = knob("shape of the demo hybrid (used when model is demo_hybrid)")
    pretrained: Union[bool, str] = knob("false (random init), true (timm hub, needs internet), or a local checkpoint path")
    image_size: int = knob("training input side, px", 32, 1024)
    epochs: int = knob("passes over the training split", 1)
    batch_size: int = knob("images per step (the last partial batch is dropped: BatchNorm needs > 1)", 1)
    lr: float = knob("base learning rate", 0.0, 10.0)
    weight_decay: float = knob("decoupled (adamw) or L2 (sgd) weight decay; none on norms, biases, embeddings", 0.0, 1.0)
    optimizer: Literal["sgd", "adamw"] = knob("sgd (momentum 0.9; the seed report: lr 5e-3) or adamw")
    schedule: Literal["poly", "cosine"] = knob("decay after warm-up: poly (power 0.9) or cosine")
    warmup_epochs: int = knob("epochs of linear warm-up", 0)
    hflip: bool = knob("random horizontal mirror")
    color_jitter: float = knob("brightness, contrast and saturation factors in [1 - s, 1 + s]", 0.0, 1.0)
    scale_range: tuple[float, float] = knob("each image resized by a factor drawn from [low, high], then cropped or padded back; [1, 1] is off",
                                            0.25, 4.0, length=2)
    seed: int = knob("initial weights, shuffling and augmentation", 0)
    amp: Precision = knob("mixed precision of the forward pass: off, bf16, or fp16 (with loss scaling); for CUDA")
    train_split: str = knob("split the classifier learns from")
    val_split: str = knob("split its mAP is measured on")

    def check(self) -> None:
        if self.scale_range[0] > self.scale_range[1]:
            raise ValueError(f"scale_range {self.scale_range} must be [low, high] with low <= high")


def make_optimizer(model: nn.Module, config: ClassifierConfig) -> torch.optim.Optimizer:
    # No weight decay on norms, biases and embeddings (1-d tensors, pos/cls tokens), as timm does.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token")) else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=config.lr)


@torch.no_grad()
def predict_scores(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> np.ndarray:
    """Sigmoid scores (N, K) for uint8 images (N, 3, H, W)."""
    out = []
    with eval_mode(model):
        for start in range(0, images.shape[0], batch_size):
            batch = normalise(images[start : start + batch_size].to(device))
            out.append(torch.sigmoid(model(batch)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes), np.float32)


def train_classifier(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: np.ndarray,
    config: ClassifierConfig,
    device: torch.device,
    group: Group = Group(),
    checkpoints: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train with BCE on multi-hot labels; returns one record per epoch (loss, lr, val mAP, per-class AP).

    Images are uint8 (N, 3, S, S) tensors already resized. Each step takes a global batch of
    ``config.batch_size`` images in the epoch's order; with several ranks each computes a slice
    of it (:class:`~pipeline.core.trainer.Trainer`). With ``checkpoints`` (a folder), a rerun continues after
    the last finished epoch. Deterministic for ``config.seed`` on CPU.
    """
    model.to(device).train()
    trainer = Trainer(model, make_optimizer(model, config), device, group, config.amp, checkpoints)
    n = train_images.shape[0]
    steps = steps_per_epoch(n, config.batch_size)
    total = steps * config.epochs
    warmup = config.warmup_epochs * steps
    base_lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    first_epoch, history = trainer.resume()
    bar = progress_bar(total=(config.epochs - first_epoch) * steps * config.batch_size, desc="train_cls")
    for epoch in range(first_epoch, config.epochs):
        loss_sum = torch.zeros((), dtype=torch.float64)
        for i, batch in enumerate(epoch_batches(n, config.batch_size, config.seed, epoch)):
            step = epoch * steps + i
            mine = batch_share(batch, group)
            rngs = [sample_rng(config.seed, epoch, j) for j in mine]
            x, _ = augment(train_images[mine], config.hflip, config.color_jitter, rngs)
            x = random_rescale(x, config.scale_range, rngs)
            y = train_labels[mine].float().to(device)
            factor = lr_factor(step, total, warmup, config.schedule)
            for param_group, base in zip(trainer.optimizer.param_groups, base_lrs):
                param_group["lr"] = base * factor
            with trainer.autocast():
                logits = trainer.network(normalise(x.to(device)))
            local_sum = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum")
            trainer.step(trainer.share_of_mean(local_sum, len(batch) * y.shape[1]))
            loss_sum += local_sum.detach().double().cpu() / (len(batch) * y.shape[1])
            bar.update(len(batch))
        trainer.sync_buffers()
        val_map, per_class = mean_average_precision(_scores(model, val_images, config.batch_size * 2, device, group), val_labels)
        loss = float(group.sum(loss_sum)) / steps
        record = {"epoch": epoch + 1, "loss": loss, "lr": base_lrs[0] * factor, "val_map": val_map, "val_ap": per_class.tolist()}
        history.append(record)
        trainer.save(epoch + 1, history)
        if on_epoch and group.is_main:
            on_epoch(record)
    bar.close()
    model.eval()
    return history


def _scores(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, group: Group) -> np.ndarray:
    """`predict_scores` on all images, each rank scoring a contiguous slice."""
    mine = batch_share(range(images.shape[0]), group)
    return np.concatenate(group.gather(predict_scores(model, images[mine], batch_size, device)))
