"""train_aff stage: train AffinityNet on the confident pairs."""
from __future__ import annotations

import torch

from pipeline.classifier.model import save_checkpoint
from pipeline.core.artifacts import Artifact
from pipeline.core.progress import progress, progress_bar
from pipeline.data.index import DatasetIndex
from pipeline.data.preprocess import resize_square
from pipeline.refine.affinity.net import build_affinitynet
from pipeline.refine.affinity.train import AffinityTrainConfig, train_affinitynet
from stages.runner.outputs import write_csv
from stages.runner.paths import AFF_PAIRS, AFFINITY_CURVE, AFFINITYNET, CLASSIFIER, DATASET
from stages.runner.spec import StageResult
from stages.runner.stage import Stage


def run(stage: Stage) -> StageResult:
    """Train AffinityNet (L_bg+ + L_fg+ + 2 L-) -> data/models/affinitynet.pt and its loss curve."""
    cfg = stage.section("train_aff", AffinityTrainConfig)
    device = stage.device
    torch.manual_seed(cfg.seed)  # the new 1x1 convolutions' initialisation
    index = DatasetIndex(DATASET)
    pairs = Artifact(AFF_PAIRS, "aff_pairs")
    image_size, radius = int(pairs.attrs["image_size"]), int(pairs.attrs["radius"])
    offsets = [tuple(o) for o in pairs.attrs["offsets"]]
    net = build_affinitynet(CLASSIFIER, image_size, cfg.hidden_channels, cfg.out_channels, device)
    where = {image_id: i for i, image_id in enumerate(index.ids)}
    images = [resize_square(index.image(where[i]), image_size) for i in progress(pairs.ids, total=len(pairs), desc="load images")]
    labels = pairs.read_all("labels")
    with stage.training(cfg.epochs) as checkpoints:
        bar = progress_bar(cfg.epochs * len(images), desc=stage.name)
        history = train_affinitynet(net, images, labels, offsets, cfg, device, stage.group, checkpoints, progress=bar.update)
        bar.close()
        if stage.group.is_main:
            # The radius travels with the network: the random walk uses the pairs it was trained on.
            save_checkpoint(AFFINITYNET, net, {"image_size": image_size, "hidden_channels": cfg.hidden_channels,
                                               "out_channels": cfg.out_channels, "radius": radius})
            write_csv(AFFINITY_CURVE, [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in history])
    stage.say(f"final loss {history[-1]['loss']:.4f} -> {AFFINITYNET}")
    return StageResult(cfg.epochs * len(images), "sample")
