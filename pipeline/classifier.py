"""Multi-label classifier training and inference on in-memory or streamed image batches."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.augment import augment
from pipeline.config import knob
from pipeline.metrics import mean_average_precision
from pipeline.models import DemoHybridConfig
from pipeline.preprocess import normalise
from pipeline.progress import progress_bar
from pipeline.training import eval_mode, lr_factor


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
    seed: int = knob("initial weights, shuffling and augmentation", 0)
    train_split: str = knob("split the classifier learns from")
    val_split: str = knob("split its mAP is measured on")


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
    return torch.cat(out).numpy()


def train_classifier(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: np.ndarray,
    config: ClassifierConfig,
    device: torch.device,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train with BCE on multi-hot labels; returns one record per epoch (loss, lr, val mAP, per-class AP).

    Images are uint8 (N, 3, S, S) tensors already resized; deterministic for `config.seed` on CPU.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    n = train_images.shape[0]
    steps_per_epoch = max(1, n // config.batch_size)  # drop the last partial batch: BN needs > 1 image
    total = steps_per_epoch * config.epochs
    warmup = config.warmup_epochs * steps_per_epoch
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    history: list[dict] = []
    step = 0
    bar = progress_bar(total=config.epochs * steps_per_epoch * config.batch_size, desc="train_cls")
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        losses = []
        for i in range(steps_per_epoch):
            index = order[i * config.batch_size : (i + 1) * config.batch_size]
            x, _ = augment(train_images[index], config.hflip, config.color_jitter, generator)
            x = x.to(device)
            x = normalise(x)
            y = train_labels[index].float().to(device)
            factor = lr_factor(step, total, warmup, config.schedule)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            bar.update(len(index))
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses):.3f}")
        scores = predict_scores(model, val_images, config.batch_size * 2, device)
        val_map, per_class = mean_average_precision(scores, val_labels)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": base_lrs[0] * factor, "val_map": val_map, "val_ap": per_class.tolist()}
        history.append(record)
        if on_epoch:
            on_epoch(record)
    bar.close()
    model.eval()
    return history
