"""Shared fixtures: a throw-away git copy of the project with tiny params, reproduced once."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.preset import merged

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: wsss and dvc live there

TINY_PARAMS = {
    "synthetic": {"num_train": 24, "num_val": 12, "image_size": 64, "num_classes": 3, "seed": 0},
    "train_cls": {
        "demo_hybrid": {"stem_channels": [8, 16, 32], "patch_size": 2, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0},
        "image_size": 64, "epochs": 2, "batch_size": 8,
    },
    "cams": {"image_size": 64, "batch_size": 8},
    "crf": {"workers": 1},
    "aff_pairs": {"image_size": 64},
    "train_aff": {"epochs": 1, "batch_size": 4, "hidden_channels": 16, "out_channels": 8},
    "train_seg": {"epochs": 1, "batch_size": 4, "crop_size": 64,
                  "network": {"backbone": "classifier", "weights": "classifier", "aspp_rates": [1, 2], "aspp_channels": 16, "low_level_channels": 8, "dropout": 0.1}},
    "evaluate_seg": {"scales": [1.0]},
    "explain_eval": {"max_images": 6, "batch_size": 6},
    "report": {"gallery_images": 3},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test built on the reproduced project runs `dvc repro` end to end: slow."""
    for item in items:
        if "reproduced_project" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "PYTHONHASHSEED": "0"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_project_copy(dest: Path, params_override: dict | None = None) -> Path:
    """The tracked project files in a new git repo at `dest`, with tiny params committed."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file() and not name.startswith(("data/", "metrics/", "plots/", "report/")) and name != "dvc.lock":
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(merged(params, {**TINY_PARAMS, **(params_override or {})}), sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], dest)
    return dest


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory) -> Path:
    """A tiny copy of the project after one full `dvc repro` (shared by the pipeline tests)."""
    project = make_project_copy(tmp_path_factory.mktemp("project"))
    run(["dvc", "repro"], project)
    return project
