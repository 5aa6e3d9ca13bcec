"""train_seg stage: train the segmentation network on random_walk's pseudo-masks (or the real masks)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pipeline.classifier.model import save_checkpoint
from pipeline.core.artifacts import Artifact
from pipeline.core.errors import InputError
from pipeline.core.progress import progress_bar
from pipeline.data.augment import steps_per_epoch
from pipeline.data.ground_truth import GroundTruth
from pipeline.data.index import DatasetIndex
from pipeline.segmentation.net import build_segmenter, segmenter_meta
from pipeline.segmentation.train import SegTrainConfig, train_segmenter
from stages.runner.outputs import write_csv
from stages.runner.paths import CLASSIFIER, DATASET, MASKS, REFINED, SEGMENTER, SEGMENTER_CURVE
from stages.runner.spec import StageResult
from stages.runner.stage import Stage


class LazyItems:
    """Items read one at a time when indexed (images from disk)."""

    def __init__(self, read: Callable[[int], np.ndarray], count: int) -> None:
        self.read, self.count = read, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, item: int) -> np.ndarray:
        return self.read(item)


def training_set(index: DatasetIndex, cfg: SegTrainConfig, source: str) -> tuple[LazyItems, list[np.ndarray]]:
    """The images of train_seg.splits (decoded when used) and their label maps, held in memory
    (uint8, a third of the decoded images' size): pseudo-masks or ground truth."""
    positions = index.indices(cfg.splits)
    if cfg.supervision == "ground_truth":
        positions = positions[index.has_mask[positions]]
        if len(positions) == 0:
            raise InputError(f"{source}: train_seg.supervision=ground_truth but no image of {cfg.splits} has a mask")
        return (LazyItems(lambda i: index.image(int(positions[i])), len(positions)),
                list(GroundTruth(MASKS).masks([index.ids[p] for p in positions])))
    refined = Artifact(REFINED, "refined")
    where = {image_id: row for row, image_id in enumerate(refined.ids)}
    missing = [index.ids[p] for p in positions if index.ids[p] not in where]
    if missing:
        raise InputError(f"{source}: train_seg.splits={cfg.splits} has {len(missing)} images without a pseudo-mask in {REFINED} "
                         f"(e.g. {missing[0]}); train on splits that are in cams.splits")
    rows = [where[index.ids[p]] for p in positions]
    return (LazyItems(lambda i: index.image(int(positions[i])), len(positions)),
            list(refined.iter_rows("labels", rows)))


def run(stage: Stage) -> StageResult:
    """Train with cross-entropy (255 ignored) -> data/models/segmenter.pt and its loss curve."""
    cfg = stage.section("train_seg", SegTrainConfig)
    index = DatasetIndex(DATASET)
    images, labels = training_set(index, cfg, stage.source)
    torch.manual_seed(cfg.seed)  # the head's initialisation
    net = build_segmenter(cfg.network, index.num_classes + 1, CLASSIFIER)
    crops = cfg.epochs * steps_per_epoch(len(images), cfg.batch_size) * cfg.batch_size
    with stage.training(cfg.epochs) as checkpoints:
        bar = progress_bar(crops, desc=stage.name, unit="crop")
        history = train_segmenter(net, images, labels, cfg, stage.device, stage.group, checkpoints, progress=bar.update)
        bar.close()
        if stage.group.is_main:
            # What it learnt from, so that evaluate_seg can refuse to score images seen with pixel labels.
            trained_on = {"supervision": cfg.supervision, "splits": list(cfg.splits)}
            save_checkpoint(SEGMENTER, net, {**segmenter_meta(cfg.network, index.class_names, CLASSIFIER), "trained_on": trained_on})
            write_csv(SEGMENTER_CURVE, [{"epoch": r["epoch"], "loss": round(r["loss"], 6), "lr": round(r["lr"], 8)} for r in history])
    stage.say(f"{len(images)} images ({cfg.supervision}), final loss {history[-1]['loss']:.4f} -> {SEGMENTER}")
    return StageResult(crops, "crop")
