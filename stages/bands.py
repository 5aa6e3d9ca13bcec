"""Expected bands of the headline figures: what a healthy default run scores, and what it was made from.

`benchmarks/spread.py seeds --write` runs the default pipeline over several training seeds and
writes ``metrics/expected.json``: per headline figure the mean, sample std, min, max and every
value, and the fingerprint of what made them (each stage's code, the params, torch, the CPU
kernel path, the threads, the machine). `wsss summary` puts each figure of a run beside its
band; the README's results tables are rendered from the same file (between markers), and
tests/test_bands.py fails when either has gone stale.

Not a stage's code: editing this module reruns nothing.
"""
from __future__ import annotations

import hashlib
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.code_deps import ROOT, stage_code_deps

EXPECTED = Path("metrics/expected.json")
README_BEGIN, README_END = "<!-- expected-bands:begin (benchmarks/spread.py readme) -->", "<!-- expected-bands:end -->"
# The knobs a band is measured over: a run with other values of these still has a band.
VARIED = ("train_cls.seed", "train_aff.seed", "train_seg.seed")


@dataclass(frozen=True)
class Figure:
    """One headline number: ``key`` is dotted into the JSON ``path``; ``scale`` turns it into %."""

    label: str
    path: str
    key: str
    scale: float = 1.0

    def read(self, root: Path = Path(".")) -> float | None:
        try:
            data: Any = json.loads((root / self.path).read_text())
            for part in self.key.split("."):
                data = data[part]
            return float(data) * self.scale
        except (OSError, ValueError, KeyError, TypeError):
            return None


HEADLINE = (
    Figure("classifier val mAP", "metrics/classifier.json", "val_map", 100.0),
    Figure("seeds mIoU (background 0.2)", "metrics/segmentation.json", "seed_miou"),
    Figure("seeds mIoU, best background", "metrics/segmentation.json", "seed_miou_best_background"),
    Figure("CRF confident mIoU", "metrics/segmentation.json", "crf_confident_miou"),
    Figure("CRF coverage %", "metrics/segmentation.json", "crf_coverage"),
    Figure("random walk mIoU", "metrics/segmentation.json", "random_walk_miou"),
    Figure("random walk gain over best-background seeds", "metrics/segmentation.json", "random_walk_gain"),
    Figure("segmenter val mIoU", "metrics/segmenter.json", "miou"),
    Figure("segmenter val mIoU with CRF", "metrics/segmenter.json", "crf.miou"),
)


def label(key: str) -> str:
    """The label of the headline figure read from JSON ``key`` (e.g. ``random_walk_miou``)."""
    return next(figure.label for figure in HEADLINE if figure.key == key)


def read_figures(root: Path = Path(".")) -> dict[str, float | None]:
    """Every headline figure of the run in ``root`` (None where its file or key is missing)."""
    return {figure.label: figure.read(root) for figure in HEADLINE}


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample std (n - 1; 0 for one value), min, max, n and the values, rounded to 0.01."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.mean(values), 2), "std": round(std, 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "n": len(values), "values": [round(v, 2) for v in values]}


def limits(band: dict[str, Any]) -> tuple[float, float]:
    """The healthy range: the wider of mean ± 2 std and min - std .. max + std (a few seeds
    estimate the std roughly, so a figure is flagged only when it is outside both)."""
    return (min(band["mean"] - 2 * band["std"], band["min"] - band["std"]),
            max(band["mean"] + 2 * band["std"], band["max"] + band["std"]))


def verdict(value: float | None, band: dict[str, Any] | None) -> str:
    """'ok', 'LOW' or 'HIGH' against the band; '' without a value or a band."""
    if value is None or band is None:
        return ""
    low, high = limits(band)
    return "LOW" if value < low else "HIGH" if value > high else "ok"


def _hash_paths(paths: list[Path], root: Path) -> str:
    digest = hashlib.md5()
    for path in sorted(paths):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_digests(root: Path = ROOT) -> dict[str, str]:
    """Per stage of dvc.yaml, an MD5 over the files of its code deps (bytecode left out, as DVC does)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out = {}
    for stage in stages:
        files: list[Path] = []
        for entry in stage_code_deps(stage, root):
            path = root / entry
            files += [p for p in path.rglob("*.py") if "__pycache__" not in p.parts] if path.is_dir() else [path]
        out[stage] = _hash_paths(files, root)
    return out


def stage_params(params: dict[str, Any], root: Path = ROOT) -> dict[str, Any]:
    """The params sections the stages of dvc.yaml read, with the :data:`VARIED` keys left out."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    sections = sorted({name for stage in stages.values() for name in stage.get("params", [])})
    chosen = json.loads(json.dumps({name: params.get(name) for name in sections}))  # a deep copy
    for key in VARIED:
        section, name = key.split(".")
        (chosen.get(section) or {}).pop(name, None)
    return chosen


def fingerprint_of(params: dict[str, Any], root: Path = ROOT) -> dict[str, Any]:
    """What a band depends on in the project itself: each stage's code, and the params (as loaded)."""
    return {"code": code_digests(root), "params": stage_params(params, root)}


def params_differences(expected: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two params trees."""
    keys = sorted(set(expected) | set(current)) if isinstance(expected, dict) and isinstance(current, dict) else []
    if not keys:
        return [] if expected == current else [prefix.rstrip(".")]
    return [diff for key in keys for diff in params_differences(expected.get(key), current.get(key), f"{prefix}{key}.")]


def load_expected(path: Path = EXPECTED) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cell(band: dict[str, Any]) -> str:
    return f"{band['mean']:.1f} ± {band['std']:.1f}"


def render_tables(expected: dict[str, Any]) -> str:
    """The README's results block: the band of each figure, then every run's value."""
    made = expected["made"]
    runs = made["runs"]
    lines = [
        f"Measured by `python benchmarks/spread.py seeds --seeds {' '.join(str(r['seed']) for r in runs)} --write` at commit "
        f"`{made['commit'][:10]}` on {made['machine']} ({made['date']}), torch {made['torch']}, CPU kernels "
        f"{made['numerics']['cpu_kernels']} ({made['numerics']['aten_cpu_capability']}), {made['numerics']['threads']} threads. "
        f"Seed N sets `{'`, `'.join(VARIED)}` to N; everything else is the default `params.yaml`. "
        f"Mean ± sample std (n = {len(runs)}), min–max, and the range `wsss summary` calls healthy:",
        "",
        "| figure | mean ± std | min – max | healthy range |",
        "|---|---|---|---|",
    ]
    for label, band in expected["figures"].items():
        low, high = limits(band)
        lines.append(f"| {label} | {_cell(band)} | {band['min']:.1f} – {band['max']:.1f} | {low:.1f} – {high:.1f} |")
    lines += ["", "Every run (the stage time is the wall time of the stages that ran; the others came from DVC's cache):", "",
              "| figure | " + " | ".join(f"seed {run['seed']}" for run in runs) + " |",
              "|---|" + "---|" * len(runs)]
    for label, band in expected["figures"].items():
        lines.append(f"| {label} | " + " | ".join(f"{value:.1f}" for value in band["values"]) + " |")
    lines.append("| stage time | " + " | ".join(f"{run['seconds'] / 60:.1f} min ({run['stages_run']} stages)" for run in runs) + " |")
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the README markers replaced by ``block``."""
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no {README_BEGIN} ... {README_END} block")
    return pattern.sub(lambda _: f"{README_BEGIN}\n{block}\n{README_END}", text)
