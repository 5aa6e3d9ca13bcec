"""How much the headline numbers move: the default pipeline over training seeds, and on other datasets.

    python benchmarks/spread.py seeds                 # train_cls.seed = train_aff.seed = train_seg.seed = 0, 1, 2
    python benchmarks/spread.py variants              # two other synthetic datasets (settings and seeds)
    python benchmarks/spread.py methods               # every explanation method that runs on the default model

Each configuration is one `dvc exp run --temp` (the workspace is left alone; stages whose
inputs did not change come from the DVC cache), named `spread-<config>`, so `dvc exp show`
lists them afterwards. The script prints Markdown tables: mean ± std (sample std, n - 1)
over the seeds, and seed -> CRF -> random walk per dataset variant. Run it on a committed
workspace: an experiment starts from HEAD plus the workspace's changes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Settings of the two extra datasets: denser clutter with more, smaller objects at 96 px, and
# sparse scenes with fewer, larger objects at 160 px; each with its own generator seed.
VARIANTS: dict[str, dict[str, object]] = {
    "cluttered": {"synthetic.image_size": 96, "synthetic.clutter": 2.0, "synthetic.objects": [2, 4], "synthetic.scale": [0.12, 0.24], "synthetic.seed": 1},
    "sparse": {"synthetic.image_size": 160, "synthetic.clutter": 0.5, "synthetic.objects": [1, 2], "synthetic.scale": [0.2, 0.35], "synthetic.seed": 2},
}

METRICS = [  # (label, file, key (dotted for nested), scale to %)
    ("classifier val mAP", "metrics/classifier.json", "val_map", 100.0),
    ("seed mIoU (bg 0.2)", "metrics/segmentation.json", "seed_miou", 1.0),
    ("seed mIoU (best bg)", "metrics/segmentation.json", "seed_miou_best_background", 1.0),
    ("CRF confident mIoU", "metrics/segmentation.json", "crf_confident_miou", 1.0),
    ("CRF coverage %", "metrics/segmentation.json", "crf_coverage", 1.0),
    ("random walk mIoU", "metrics/segmentation.json", "random_walk_miou", 1.0),
    ("segmenter val mIoU", "metrics/segmenter.json", "miou", 1.0),
    ("segmenter val mIoU + CRF", "metrics/segmenter.json", "crf.miou", 1.0),
]


def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def _set_args(settings: dict[str, object]) -> list[str]:
    out: list[str] = []
    for key, value in settings.items():
        out += ["-S", f"{key}={json.dumps(value)}"]
    return out


def _lookup(data: dict, key: str) -> float:
    for part in key.split("."):
        data = data[part]
    return data


def experiment_json(name: str, path: str) -> dict:
    """A JSON file as the experiment `name` committed it."""
    refs = [r for r in _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"]).split() if r.endswith(f"/{name}")]
    return json.loads(_run(["git", "show", f"{refs[0]}:{path}"]))


def run_experiment(name: str, settings: dict[str, object], timings: Path | None = None) -> dict[str, float]:
    """`dvc exp run --temp` under `name`; returns the metrics of the finished experiment.

    With `timings`, the stages that run record their wall times there (WSSS_TIMINGS_DIR),
    since the temporary workspace, and its metrics/timings/, is gone afterwards.
    """
    start = time.perf_counter()
    if any(ref.endswith(f"/{name}") for ref in _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"]).split()):
        _run(["dvc", "exp", "remove", name])  # a rerun replaces the earlier experiment of that name
    env = {**os.environ, "WSSS_TIMINGS_DIR": str(timings)} if timings else None
    _run(["dvc", "exp", "run", "--temp", "-n", name, *_set_args(settings)], env)
    values = {}
    for label, path, key, scale in METRICS:
        values[label] = _lookup(experiment_json(name, path), key) * scale
    print(f"{name}: done in {time.perf_counter() - start:.0f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in values.items()), file=sys.stderr)
    return values


def seeds(values: list[int]) -> None:
    runs = [run_experiment(f"spread-seed{s}", {"train_cls.seed": s, "train_aff.seed": s, "train_seg.seed": s}) for s in values]
    print("| metric | " + " | ".join(f"seed {s}" for s in values) + f" | mean ± std (n={len(values)}) |")
    print("|---|" + "---|" * (len(values) + 1))
    for label, *_ in METRICS:
        column = [run[label] for run in runs]
        spread = statistics.stdev(column) if len(column) > 1 else 0.0
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in column) + f" | {statistics.mean(column):.1f} ± {spread:.1f} |")


def variants(names: list[str]) -> None:
    print("| dataset | settings | seed mIoU (best bg) | CRF confident mIoU | random walk mIoU | walk gain over best seed |")
    print("|---|---|---|---|---|---|")
    for name in names:
        run = run_experiment(f"spread-{name}", VARIANTS[name])
        settings = ", ".join(f"{k.split('.')[1]} {v}" for k, v in VARIANTS[name].items())
        gain = run["random walk mIoU"] - run["seed mIoU (best bg)"]
        print(f"| {name} | {settings} | {run['seed mIoU (best bg)']:.1f} | {run['CRF confident mIoU']:.1f} | {run['random walk mIoU']:.1f} | {gain:+.1f} |")


def methods(names: list[str]) -> None:
    """One experiment per cams.method; the cams stage's recorded wall time gives the time per image."""
    print("| cams.method | seed mIoU (best bg) | random walk mIoU | segmenter val mIoU | + CRF | cams s / image |")
    print("|---|---|---|---|---|---|")
    for method in names:
        name = f"spread-method-{method.replace('_', '-')}"
        with tempfile.TemporaryDirectory() as folder:
            run = run_experiment(name, {"cams.method": method}, Path(folder))
            timing = Path(folder) / "cams.json"
            # cams explains the images evaluate judges (both default to the train split). A stage
            # restored from DVC's run-cache does not run, so it records no time.
            images = experiment_json(name, "metrics/segmentation.json")["images"]
            per_image = f"{json.loads(timing.read_text())['seconds'] / images:.3f}" if timing.is_file() else "cached"
        print(f"| {method} | {run['seed mIoU (best bg)']:.1f} | {run['random walk mIoU']:.1f} | {run['segmenter val mIoU']:.1f} "
              f"| {run['segmenter val mIoU + CRF']:.1f} | {per_image} |", flush=True)


def token_methods() -> list[str]:
    """The registered methods that run on the demo hybrid (relevance at the tokens)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.explain import METHODS

    return [m.name for m in METHODS.values() if not m.pixels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    seed_parser = sub.add_parser("seeds", help="the default pipeline over training seeds")
    seed_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    variant_parser = sub.add_parser("variants", help="the default pipeline on other synthetic datasets")
    variant_parser.add_argument("--names", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    method_parser = sub.add_parser("methods", help="the default pipeline with each explanation method as cams.method")
    method_parser.add_argument("--names", nargs="+", default=None, help="default: every method that runs on the demo hybrid")
    args = parser.parse_args()
    if args.mode == "seeds":
        seeds(args.seeds)
    elif args.mode == "variants":
        variants(args.names)
    else:
        methods(args.names or token_methods())


if __name__ == "__main__":
    main()
