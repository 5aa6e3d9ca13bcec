"""train_seg stage: train the segmentation network on random_walk's pseudo-masks (or the real masks)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts import Artifact
from pipeline.dataset_index import DatasetIndex
from pipeline.distributed import leave
from pipeline.trainer import last_checkpoint
from pipeline.errors import InputError
from pipeline.ground_truth import GroundTruth
from pipeline.models import save_checkpoint
from pipeline.progress import progress_bar
from pipeline.segmentation.net import build_segmenter, segmenter_meta
from pipeline.segmentation.train import SegTrainConfig, train_segmenter
from stages.common import PARAMS_OPTION, StageParams, echo, write_csv
from stages.paths import CLASSIFIER, DATASET, MASKS, REFINED, SEGMENTER, SEGMENTER_CURVE
from stages.staging import remove_staging, resuming_note, staging_folder

OUTPUT = SEGMENTER
CURVE = SEGMENTER_CURVE


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


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Train with cross-entropy (255 ignored) -> data/models/segmenter.pt and its loss curve."""
    params = StageParams(params_file)
    cfg = params.section("train_seg", SegTrainConfig)
    group, device = params.join()
    index = DatasetIndex(DATASET)
    images, labels = training_set(index, cfg, params.source)
    torch.manual_seed(cfg.seed)  # the head's initialisation
    net = build_segmenter(cfg.network, index.num_classes + 1, CLASSIFIER)
    steps = cfg.epochs * (len(images) // cfg.batch_size) * cfg.batch_size
    bar = progress_bar(steps, desc="train_seg", unit="crop")
    staging = staging_folder("train_seg", params, group)
    resuming_note("train_seg", last_checkpoint(staging)[0], cfg.epochs, "epochs", group)
    history = train_segmenter(net, images, labels, cfg, device, group, staging, progress=bar.update)
    bar.close()
    if group.is_main:
        # What it learnt from, so that evaluate_seg can refuse to score images seen with pixel labels.
        trained_on = {"supervision": cfg.supervision, "splits": list(cfg.splits)}
        save_checkpoint(OUTPUT, net, {**segmenter_meta(cfg.network, index.class_names, CLASSIFIER), "trained_on": trained_on})
        write_csv(CURVE, [{"epoch": r["epoch"], "loss": round(r["loss"], 6), "lr": round(r["lr"], 8)} for r in history])
        echo(f"train_seg: {len(images)} images ({cfg.supervision}), final loss {history[-1]['loss']:.4f} -> {OUTPUT}")
    remove_staging(staging, group)
    leave(group)
    return steps, "crop"
