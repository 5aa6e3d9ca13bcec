"""A per-image stage as P processes x T threads against 1 process x P*T threads, on one machine.

Runs `wsss <stage>` in a scratch copy of the project (its inputs must exist: run `dvc repro`
first), once per layout and repeat, and prints its images per second (images in its store over the wall
time in its timings file, start-up included), with the ratio to the first layout. The project's own outputs are left alone.

    .venv/bin/python benchmarks/bench_distributed.py --stage cams --layouts 1x2 2x1 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pipeline.core.artifacts import Artifact

ROOT = Path(__file__).resolve().parents[1]
# What a per-image stage reads besides code and params: copied (images and stores are small here).
STORES = {"cams": ("data/cams.zarr", "cams"), "crf_labels": ("data/crf_labels.zarr", "crf_labels"), "random_walk": ("data/refined.zarr", "refined")}
INPUTS = ("data/synthetic", "data/dataset.zarr", "data/masks.zarr", "data/models", "data/cams.zarr", "data/crf_labels.zarr", "data/aff_pairs.zarr")


def scratch_copy(dest: Path) -> None:
    for name in ("pipeline", "stages", "dvc.yaml", "params.yaml"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, dest / name)
    for name in INPUTS:
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name)


def images_in(project: Path, stage: str) -> int:
    """How many images the stage's store holds (cams counts maps in its timings, not images)."""
    path, kind = STORES[stage]
    return len(Artifact(project / path, kind))


def run(project: Path, stage: str, processes: int, threads: int) -> dict:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["distributed"]["nproc_per_node"] = processes
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["wsss", stage], cwd=project, env=env, check=True, capture_output=True)
    return json.loads((project / "metrics/timings" / f"{stage}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="cams")
    parser.add_argument("--layouts", nargs="+", default=["1x2", "2x1"], help="PROCESSESxTHREADS, e.g. 1x2 2x1")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch)
        scratch_copy(project)
        results: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            for layout in args.layouts:  # interleaved, so a slow spell of the machine hits every layout
                processes, threads = (int(v) for v in layout.split("x"))
                timing = run(project, args.stage, processes, threads)
                images_per_second = images_in(project, args.stage) / timing["seconds"]
                results.setdefault(layout, []).append(images_per_second)
                print(f"repeat {repeat + 1} {layout}: {images_per_second:.2f} images/s ({timing['items_per_second']:.2f} "
                      f"{timing['items'][1]}/s), {timing['seconds']:.1f} s wall, {timing['cpu_seconds']:.1f} s CPU, "
                      f"{timing['peak_memory_mib']:.0f} MiB peak", flush=True)
    first = statistics.mean(results[args.layouts[0]])
    for layout, rates in results.items():
        spread = f" ± {statistics.stdev(rates):.2f}" if len(rates) > 1 else ""
        print(f"{args.stage} {layout} (processes x threads): {statistics.mean(rates):.2f}{spread} images/s, "
              f"x{statistics.mean(rates) / first:.2f} of {args.layouts[0]}")


if __name__ == "__main__":
    main()
