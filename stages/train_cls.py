"""train_cls stage: train the ViT multi-label classifier on image-level labels."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.classifier.model import build_classifier, classifier_meta, save_checkpoint
from pipeline.classifier.train import ClassifierConfig, train_classifier
from pipeline.core.errors import InputError
from pipeline.core.progress import progress
from pipeline.data.augment import steps_per_epoch
from pipeline.data.index import DatasetIndex
from pipeline.data.preprocess import resize_square, to_tensor
from stages.runner.outputs import echo, write_csv, write_json
from stages.runner.paths import CLASSIFIER, CLASSIFIER_CURVE, CLASSIFIER_METRICS, DATASET
from stages.runner.spec import StageResult
from stages.runner.stage import Stage


def load_images(index: DatasetIndex, positions: np.ndarray, size: int, desc: str) -> torch.Tensor:
    """uint8 (N, 3, size, size) of the images at `positions`, square-resized."""
    return to_tensor([resize_square(index.image(int(i)), size) for i in progress(positions, total=len(positions), desc=desc)])


def run(stage: Stage) -> StageResult:
    """Train the classifier; writes data/models/classifier.pt, val mAP metrics and the training curve."""
    cfg = stage.section("train_cls", ClassifierConfig)
    index = DatasetIndex(DATASET)
    train_pos, val_pos = index.indices([cfg.train_split]), index.indices([cfg.val_split])
    if len(train_pos) == 0 or len(val_pos) == 0:
        raise InputError(f"{stage.source}: train_cls.train_split / val_split select {len(train_pos)} / {len(val_pos)} images; both must be non-empty")
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_classifier(cfg.model, index.num_classes, cfg.image_size, cfg.pretrained, cfg.demo_hybrid)
    train_images = load_images(index, train_pos, cfg.image_size, "load train")
    val_images = load_images(index, val_pos, cfg.image_size, "load val")
    with stage.training(cfg.epochs) as checkpoints:
        history = train_classifier(
            model, train_images, torch.from_numpy(index.labels[train_pos]), val_images, index.labels[val_pos], cfg, stage.device, stage.group,
            checkpoints=checkpoints, on_epoch=lambda r: echo(f"epoch {r['epoch']}: loss {r['loss']:.4f} val mAP {r['val_map']:.4f}"),
        )
        if stage.group.is_main:
            save_checkpoint(CLASSIFIER, model, classifier_meta(cfg.model, index.num_classes, cfg.image_size, index.class_names, cfg.demo_hybrid))
            final = history[-1]
            write_json(CLASSIFIER_METRICS, {"val_map": round(final["val_map"], 6),
                                            "val_ap": {n: round(a, 6) for n, a in zip(index.class_names, final["val_ap"])}})
            write_csv(CLASSIFIER_CURVE, [{"epoch": r["epoch"], "loss": round(r["loss"], 6), "val_map": round(r["val_map"], 6)} for r in history])
    return StageResult(cfg.epochs * steps_per_epoch(len(train_pos), cfg.batch_size) * cfg.batch_size, "sample")
