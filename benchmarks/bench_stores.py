"""Plumbing at COCO's size: index, stores and DVC per image, at several dataset sizes.

    python benchmarks/bench_stores.py --images 10000 82081
    python benchmarks/bench_stores.py --images 2000 --json stores.json

For each size it generates a folder + CSV dataset of tiny images (--side px; 90 % train, 10 %
val; one to two of three classes per image; a mask for every image), copies the project's
tracked files into a fresh git + DVC project pointing `dataset` at it, and runs, each as
`dvc repro --single-item STAGE`:

- dataset: decode and MD5 every image, write data/dataset.zarr;
- masks: read every mask, write data/masks.zarr;
- crf_labels: two dense CRFs per train image (crf.iterations 1, at --side px: the work is
  small, so the plumbing shows) from a data/cams.zarr this script writes (random 2x2 maps).

Per stage it prints the DVC wall time, the stage's own time (its timings record) and peak
memory, and the overhead per image in ms: dvc (hashing, lock, cache) is wall minus stage time.
Then the wall time of a no-op `dvc status` for the whole project (the stages after crf_labels
never ran; DVC still hashes every dep it can) and for the three stages that ran. The last
column, per image at this size over per image at the first size, says whether a step grows
faster than the image count (1.0: linear).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.artifacts import ArtifactWriter  # noqa: E402
from pipeline.core.progress import progress  # noqa: E402
from pipeline.data.index import DatasetIndex  # noqa: E402
from pipeline.data.label_maps import save_label_png  # noqa: E402
from stages.preset import merged  # noqa: E402

CLASSES = ("disc", "square", "ring")
STAGES = ("dataset", "masks", "crf_labels")
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def generate(root: Path, count: int, side: int, seed: int = 0) -> None:
    """``count`` images under root/images/<k // 1000>/, a mask each, and labels.csv."""
    rng = np.random.default_rng(seed)
    rows = ["image,split,labels"]
    yy, xx = np.mgrid[:side, :side]
    for k in progress(range(count), total=count, desc=f"generate {count}"):
        present = sorted(rng.choice(len(CLASSES), size=rng.integers(1, 3), replace=False))
        image = np.full((side, side, 3), 40, np.uint8)
        mask = np.zeros((side, side), np.uint8)
        for c in present:
            cy, cx, r = rng.integers(side // 4, 3 * side // 4, 2).tolist() + [side // 5]
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            image[inside] = (80 * (c + 1), 200 - 60 * c, 120)
            mask[inside] = c + 1
        name = f"{k // 1000:03d}/{k:06d}.png"
        for folder, write in (("images", lambda p: Image.fromarray(image).save(p)), ("masks", lambda p: save_label_png(p, mask))):
            (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
            write(root / folder / name)
        split = "val" if k % 10 == 9 else "train"
        rows.append(f"{name},{split},{';'.join(CLASSES[c] for c in present)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "class_names.txt").write_text("\n".join(CLASSES) + "\n")


def make_project(dest: Path, dataset_root: Path) -> None:
    """The repository's tracked files in a fresh git + DVC project, `dataset` on the generated folder."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if not name.startswith(("data/", "metrics/", "plots/", "report/")) and name != "dvc.lock" and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    overlay = {"dataset": {"format": "folder", "root": str(dataset_root), "splits": ["train", "val"], "held_out": ["val"]},
               "cams": {"splits": ["train"]}, "crf": {"iterations": 1}}
    (dest / "params.yaml").write_text(yaml.safe_dump(merged(params, overlay), sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "-c", "user.email=b@b", "-c", "user.name=b", "add", "-A"],
                    ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench"]):
        subprocess.run(command, cwd=dest, check=True, env=ENV)


def write_cams(project: Path) -> None:
    """A data/cams.zarr for the train images: random 2x2 maps of the present classes."""
    index = DatasetIndex(project / "data/dataset.zarr")
    positions = index.indices(["train"])
    rng = np.random.default_rng(0)
    attrs = {"class_names": index.class_names, "grid": [2, 2], "stride": 16, "image_size": 32, "method": "random",
             "start_layer": 0, "scales": [1.0], "flip": False, "normalisation": "per class: clip at 0, divide by its max"}
    with ArtifactWriter(project / "data/cams.zarr", "cams", [index.ids[p] for p in positions], attrs) as out:
        out.create("cams", (index.num_classes, 2, 2), "float16")
        out.create("labels", (index.num_classes,), "uint8")
        for row, p in enumerate(positions):
            out.write("labels", row, index.labels[p])
            out.write("cams", row, (rng.random((index.num_classes, 2, 2)) * index.labels[p][:, None, None]).astype(np.float16))


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def run_size(count: int, side: int, work: Path, stages: tuple[str, ...] = STAGES) -> dict:
    data, project = work / f"images_{count}", work / f"project_{count}"
    project.mkdir(parents=True)
    start = time.perf_counter()
    generate(data, count, side)
    generated = time.perf_counter() - start
    make_project(project, data)
    rows = []
    for stage in stages:
        if stage == "crf_labels":
            write_cams(project)
        wall = timed(["dvc", "repro", "--single-item", stage], project)
        record = json.loads((project / "metrics/timings" / f"{stage}.json").read_text())
        items = record["items"][0]
        rows.append({"stage": stage, "items": items, "wall_s": round(wall, 2), "stage_s": record["seconds"],
                     "peak_mib": record["peak_memory_mib"], "ms_per_item": round(1000 * wall / items, 3),
                     "dvc_ms_per_item": round(1000 * (wall - record["seconds"]) / items, 3)})
    timed(["dvc", "status"], project)  # warm the state database once, as any second status would
    status_all = timed(["dvc", "status"], project)
    status_ran = timed(["dvc", "status", *stages], project)
    return {"images": count, "generate_s": round(generated, 1), "rows": rows,
            "status_all_s": round(status_all, 2), "status_ran_s": round(status_ran, 2)}


def print_table(results: list[dict]) -> None:
    first = {row["stage"]: row for result in reversed(results) for row in result["rows"]}  # each stage's smallest size
    print("| images | stage | items | dvc repro s | stage s | peak MiB | ms / item | dvc ms / item | per item vs first size |")
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        for row in result["rows"]:
            ratio = row["ms_per_item"] / first[row["stage"]]["ms_per_item"]  # 1.0 on a stage's smallest size
            print(f"| {result['images']:,} | {row['stage']} | {row['items']:,} | {row['wall_s']} | {row['stage_s']} | {row['peak_mib']} | "
                  f"{row['ms_per_item']} | {row['dvc_ms_per_item']} | {ratio:.2f} |")
    for result in results:
        print(f"{result['images']:,} images: no-op `dvc status` {result['status_all_s']} s (whole project), "
              f"{result['status_ran_s']} s (the stages run); generating took {result['generate_s']} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[10000, 82081], help="dataset sizes, smallest first")
    parser.add_argument("--side", type=int, default=32, help="image side in px")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"which of {','.join(STAGES)} to run, in that order")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_stores_"))
    try:
        stages = tuple(stage for stage in STAGES if stage in args.stages.split(","))
        results = []
        for count in args.images:
            results.append(run_size(count, args.side, work, stages))
            if args.json:  # after each size: a long run that is stopped keeps what it measured
                args.json.write_text(json.dumps({"results": results, "side": args.side}, indent=2) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print_table(results)


if __name__ == "__main__":
    main()
