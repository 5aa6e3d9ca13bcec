"""train_aff stage: train AffinityNet on the confident pairs."""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline.affinity.net import build_affinitynet
from pipeline.affinity.train import AffinityTrainConfig, train_affinitynet
from pipeline.artifacts import Artifact
from pipeline.preprocess import resize_square
from pipeline.dataset_index import DatasetIndex
from pipeline.distributed import leave
from pipeline.trainer import last_checkpoint
from pipeline.models import save_checkpoint
from pipeline.progress import progress, progress_bar
from stages.common import PARAMS_OPTION, StageParams, echo, write_csv
from stages.paths import AFF_PAIRS, AFFINITY_CURVE, AFFINITYNET, CLASSIFIER, DATASET
from stages.staging import remove_staging, resuming_note, staging_folder

PAIRS = AFF_PAIRS
OUTPUT = AFFINITYNET
CURVE = AFFINITY_CURVE


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Train AffinityNet (L_bg+ + L_fg+ + 2 L-) -> data/models/affinitynet.pt and its loss curve."""
    params = StageParams(params_file)
    cfg = params.section("train_aff", AffinityTrainConfig)
    group, device = params.join()
    torch.manual_seed(cfg.seed)  # the new 1x1 convolutions' initialisation
    index = DatasetIndex(DATASET)
    pairs = Artifact(PAIRS, "aff_pairs")
    image_size = int(pairs.attrs["image_size"])
    offsets = [tuple(o) for o in pairs.attrs["offsets"]]
    net = build_affinitynet(CLASSIFIER, image_size, cfg.hidden_channels, cfg.out_channels, device)
    where = {image_id: i for i, image_id in enumerate(index.ids)}
    images = [resize_square(index.image(where[i]), image_size) for i in progress(pairs.ids, total=len(pairs), desc="load images")]
    labels = pairs.read_all("labels")
    bar = progress_bar(cfg.epochs * len(images), desc="train_aff")
    staging = staging_folder("train_aff", params, group)
    resuming_note("train_aff", last_checkpoint(staging)[0], cfg.epochs, "epochs", group)
    history = train_affinitynet(net, images, labels, offsets, cfg, device, group, staging, progress=bar.update)
    bar.close()
    if group.is_main:
        save_checkpoint(OUTPUT, net, {"image_size": image_size, "hidden_channels": cfg.hidden_channels, "out_channels": cfg.out_channels})
        write_csv(CURVE, [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in history])
        echo(f"train_aff: final loss {history[-1]['loss']:.4f} -> {OUTPUT}")
    remove_staging(staging, group)
    leave(group)
    return cfg.epochs * len(images), "sample"
