"""synthetic stage: generate the built-in VOC-layout dataset under data/synthetic."""
from __future__ import annotations

from pathlib import Path

from pipeline.files import atomic_path
from pipeline.synthetic import SyntheticConfig, generate
from stages.common import PARAMS_OPTION, StageParams, echo
from stages.paths import SYNTHETIC

OUTPUT = SYNTHETIC


def main(params_file: Path = PARAMS_OPTION) -> tuple[int, str]:
    """Generate the built-in shapes dataset (VOC layout) into data/synthetic."""
    params = StageParams(params_file)
    config = params.section("synthetic", SyntheticConfig)
    with atomic_path(OUTPUT) as tmp:
        summary = generate(tmp, config)
    echo(f"synthetic: wrote {summary} to {OUTPUT}")
    return config.num_train + config.num_val, "image"
