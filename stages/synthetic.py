"""synthetic stage: generate the built-in VOC-layout dataset under data/synthetic."""
from __future__ import annotations

from pipeline.core.files import atomic_path
from pipeline.sources.synthetic import SyntheticConfig, generate
from stages.runner.paths import SYNTHETIC
from stages.runner.spec import StageResult
from stages.runner.stage import Stage

OUTPUT = SYNTHETIC


def run(stage: Stage) -> StageResult:
    """Generate the built-in shapes dataset (VOC layout) into data/synthetic."""
    config = stage.section("synthetic", SyntheticConfig)
    with atomic_path(OUTPUT) as tmp:
        summary = generate(tmp, config)
    stage.say(f"wrote {summary} to {OUTPUT}")
    return StageResult(config.num_train + config.num_val, "image")
