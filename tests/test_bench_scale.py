"""benchmarks/bench_scale.py end to end on a tiny overlay: a row per stage with a positive rate and a
finite projection, the JSON readable, and one clear message for a preset that does not exist."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_scale.py"
STAGES = ["train_cls", "cams", "crf_labels", "train_aff", "random_walk", "train_seg", "evaluate_seg", "explain_eval"]

# The default demo hybrid at 64 px, batches of 2, two scales, two explanation methods and short CRFs:
# the images stay at VOC's 500x375 (the CRFs and evaluate_seg run there), so the run takes seconds per stage.
TINY_OVERLAY = {
    "train_cls": {"model": "demo_hybrid", "image_size": 64, "batch_size": 2},
    "cams": {"image_size": 64, "scales": [0.5, 1.0], "batch_size": 2},
    "crf": {"iterations": 2, "workers": 1},
    "aff_pairs": {"image_size": 64},
    "train_aff": {"batch_size": 2, "hidden_channels": 16, "out_channels": 8},
    "train_seg": {"batch_size": 2, "crop_size": 64, "network": {"aspp_rates": [1, 2], "aspp_channels": 16, "low_level_channels": 8}},
    "evaluate_seg": {"scales": [1.0], "flip": True, "crf": {"iterations": 2}},
    "explain_eval": {"methods": ["transformer_attribution", "gradcam"], "batch_size": 2, "max_forward_batch": 8},
}


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_every_stage_is_timed_and_projected(tmp_path: Path) -> None:
    preset, report_file = tmp_path / "tiny.yaml", tmp_path / "scale.json"
    preset.write_text(yaml.safe_dump(TINY_OVERLAY))
    result = bench("--preset", str(preset), "--images", "2", "--steps", "1", "--threads", "1", "--json", str(report_file))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert [row["stage"] for row in report["rows"]] == STAGES
    for number, row in enumerate(report["rows"], 1):
        assert "error" not in row, row
        assert row["items"] > 0 and row["rate"] > 0, row
        assert math.isfinite(row["projected_s"]) and row["projected_s"] > 0, row
        assert row["host_peak_gib"] > 0
        assert (row["cuda_peak_gib"] is None) == (row["device"] == "cpu"), row
        assert f"[{number}/{len(STAGES)}] {row['stage']} ..." in result.stdout
        assert f"| {row['stage']} | {row['items']} | {row['unit']} |" in result.stdout
    assert math.isfinite(report["total_projected_s"]) and report["dataset"] == "VOC 2012 + SBD"
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch"]
    assert "total projected:" in result.stdout and "machine:" in result.stdout


def test_a_missing_preset_is_one_clear_error(tmp_path: Path) -> None:
    result = bench("--preset", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"bench_scale: preset {tmp_path / 'nope.yaml'}: no such file; give an overlay of params.yaml, e.g. configs/voc2012.yaml"
    assert result.stdout == ""
