"""synthetic stage: generate the built-in VOC-layout dataset under data/synthetic."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.synthetic import generate
from stages import params as P
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import SYNTHETIC

OUTPUT = SYNTHETIC


def main(params_file: Path = PARAMS_OPTION) -> None:
    """Generate the built-in shapes dataset (VOC layout) into data/synthetic."""
    params = StageParams(params_file)
    cfg = params.section("synthetic", P.SyntheticParams)
    tmp = OUTPUT.with_name(f".{OUTPUT.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if cfg.objects[0] > cfg.objects[1] or cfg.scale[0] > cfg.scale[1]:
        raise P.ParamsError(f"{params.source}: synthetic.objects and synthetic.scale are (min, max) pairs; put the smaller value first")
    summary = generate(tmp, num_train=cfg.num_train, num_val=cfg.num_val, image_size=cfg.image_size, num_classes=cfg.num_classes,
                       seed=cfg.seed, objects=tuple(cfg.objects), scale=tuple(cfg.scale), clutter=cfg.clutter)
    shutil.rmtree(OUTPUT, ignore_errors=True)
    os.replace(tmp, OUTPUT)
    echo(f"synthetic: wrote {summary} to {OUTPUT}")
