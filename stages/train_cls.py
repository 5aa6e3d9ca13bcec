"""train_cls stage: train the ViT multi-label classifier on image-level labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.classifier import ClassifierConfig, train_classifier
from pipeline.dataset_index import DatasetIndex
from pipeline.distributed import leave
from pipeline.trainer import last_checkpoint
from pipeline.errors import InputError
from pipeline.models import build_classifier, classifier_meta, save_checkpoint
from pipeline.preprocess import resize_square, to_tensor
from pipeline.progress import progress
from stages.common import PARAMS_OPTION, StageParams, echo, write_csv, write_json
from stages.paths import CLASSIFIER, CLASSIFIER_CURVE, CLASSIFIER_METRICS, DATASET
from stages.staging import remove_staging, resuming_note, staging_folder

OUTPUT = CLASSIFIER
METRICS = CLASSIFIER_METRICS
CURVE = CLASSIFIER_CURVE


def load_images(index: DatasetIndex, positions: np.ndarray, size: int, desc: str) -> torch.Tensor:
    """uint8 (N, 3, size, size) of the images at `positions`, square-resized."""
    return to_tensor([resize_square(index.image(int(i)), size) for i in progress(positions, total=len(positions), desc=desc)])


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Train the classifier; writes data/models/classifier.pt, val mAP metrics and the training curve."""
    params = StageParams(params_file)
    cfg = params.section("train_cls", ClassifierConfig)
    group, device = params.join()
    index = DatasetIndex(DATASET)
    train_pos, val_pos = index.indices([cfg.train_split]), index.indices([cfg.val_split])
    if len(train_pos) == 0 or len(val_pos) == 0:
        raise InputError(f"{params.source}: train_cls.train_split / val_split select {len(train_pos)} / {len(val_pos)} images; both must be non-empty")
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_classifier(cfg.model, index.num_classes, cfg.image_size, cfg.pretrained, cfg.demo_hybrid)
    train_images = load_images(index, train_pos, cfg.image_size, "load train")
    val_images = load_images(index, val_pos, cfg.image_size, "load val")
    staging = staging_folder("train_cls", params, group)
    resuming_note("train_cls", last_checkpoint(staging)[0], cfg.epochs, "epochs", group)
    history = train_classifier(
        model, train_images, torch.from_numpy(index.labels[train_pos]), val_images, index.labels[val_pos], cfg, device, group,
        checkpoints=staging,
        on_epoch=lambda r: echo(f"epoch {r['epoch']}: loss {r['loss']:.4f} val mAP {r['val_map']:.4f}"),
    )
    if group.is_main:
        save_checkpoint(OUTPUT, model, classifier_meta(cfg.model, index.num_classes, cfg.image_size, index.class_names, cfg.demo_hybrid))
        final = history[-1]
        write_json(METRICS, {"val_map": round(final["val_map"], 6), "val_ap": {n: round(a, 6) for n, a in zip(index.class_names, final["val_ap"])}})
        write_csv(CURVE, [{"epoch": r["epoch"], "loss": round(r["loss"], 6), "val_map": round(r["val_map"], 6)} for r in history])
    remove_staging(staging, group)
    leave(group)
    return cfg.epochs * (len(train_pos) // cfg.batch_size) * cfg.batch_size, "sample"
