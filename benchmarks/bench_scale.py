"""Scale rehearsal: every stage's library code at a preset's true settings, timed on a few generated
images, with each stage's memory peaks and its projected wall time on the full dataset.

    python benchmarks/bench_scale.py --preset configs/voc2012.yaml
    python benchmarks/bench_scale.py --preset configs/coco2014.yaml --images 3 --stages cams,crf_labels --json scale.json
    python benchmarks/bench_scale.py --preset configs/voc2012.yaml --threads 8

The preset is laid over params.yaml as `wsss preset` lays it (stages.preset.merged). Weights are
random (train_cls.pretrained false; train_seg.network.weights false or the random classifier's):
nothing is downloaded, and a network's speed does not depend on its weights. The device is CUDA
when present, else the CPU. Images are generated at the dataset's typical size (smooth colours,
one blob per present class, the dataset's mean number of classes per image).

Each stage runs in its own process (this script with --worker STAGE), so that the host peak
(ru_maxrss) is that stage's; on CUDA the peak of torch's allocator is reported too. Up to one
worker per core starts at once (their imports overlap), but only one stage runs at a time. Each runs
one warm-up iteration, then times its work: train_cls, train_aff and train_seg --steps optimizer
steps of their batch size (train_cls also its per-epoch val pass); cams every (image, present
class) pair over its scales and flips; crf_labels the two CRFs per image at full size; random_walk
affinities, walk and upsampling per image; evaluate_seg network (scales, flip) and CRF per full
image; explain_eval each method's perturbation and segmentation tests on one batch.

Projections (dataset.format voc: VOC 2012 + SBD; coco: COCO 2014; numbers in scale_data.py):
training stages epochs x images / (images/s); cams images x classes per image / (pairs/s); the
per-image stages their split's images; explain_eval max_images x methods. They are for one process
on this device (crf_labels: crf.workers processes): distributed.nproc_per_node GPUs divide them.
JPEG decoding, zarr reads and writes and model loading are not timed.

"planned peak" is the tensor peak of the largest batch the stage's planner chose at the true batch
size (pipeline/core/memory.py's dry run, beyond the weights): the figure that must fit the GPU. The
timed batches hold at most --images images, so on a CPU the host peak is for fewer.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # pipeline and stages, installed or not

from scale_data import DatasetScale, dataset_scale  # noqa: E402

from pipeline.core.errors import InputError  # noqa: E402
from stages.preset import merged  # noqa: E402
from stages.runner import params as P  # noqa: E402

STAGES = ("train_cls", "cams", "crf_labels", "train_aff", "random_walk", "train_seg", "evaluate_seg", "explain_eval")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", type=Path, required=True, help="overlay on params.yaml, e.g. configs/voc2012.yaml")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="the params the preset is laid over")
    parser.add_argument("--images", type=int, default=3, help="generated images per stage")
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps per training stage")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset, in pipeline order")
    parser.add_argument("--json", type=Path, help="write every row, the total and the machine here")
    parser.add_argument("--threads", type=int, help="torch CPU threads per stage (default: torch's)")
    parser.add_argument("--worker", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.images < 1 or args.steps < 1:
        parser.error("--images and --steps must be at least 1")
    return args


def load_params(params_file: Path, preset: Path) -> dict[str, Any]:
    if not preset.is_file():
        raise InputError(f"preset {preset}: no such file; give an overlay of params.yaml, e.g. configs/voc2012.yaml")
    return merged(P.load(params_file), P.load(preset))


def selected(stages: str) -> list[str]:
    names = [name.strip() for name in stages.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise InputError(f"--stages {stages!r}: choose among {', '.join(STAGES)}")
    return [name for name in STAGES if name in names]


def serve_stage(args: argparse.Namespace) -> None:
    """--worker: import, say "ready", wait for "go", run the stage, write its row and peaks to --result."""
    import resource

    import torch
    from scale_stages import NETWORKLESS, WORKERS, Rehearsal

    if args.worker not in NETWORKLESS:
        import pipeline.classifier.model  # noqa: F401  (timm: most of the start-up, done before the go)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params, args.preset)
    with tempfile.TemporaryDirectory() as workdir:
        rehearsal = Rehearsal(params, f"{args.params} + {args.preset}", args.images, args.steps, Path(workdir))
        row = WORKERS[args.worker](rehearsal)
    cuda = rehearsal.device.type == "cuda"
    row.update(
        host_peak_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
        cuda_peak_gib=torch.cuda.max_memory_allocated(rehearsal.device) / 2**30 if cuda else None,
        device=torch.cuda.get_device_name(rehearsal.device) if cuda else "cpu",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    args.result.write_text(json.dumps(row))


class StageProcess:
    """One stage's worker: started early (its imports may overlap other start-ups), then told to go
    while no other stage runs, so that the timings are never shared with another stage's work."""

    def __init__(self, stage: str, args: argparse.Namespace, folder: Path) -> None:
        self.stage, self.result, self.log, self.ready = stage, folder / f"{stage}.json", folder / f"{stage}.log", False
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", stage, "--preset", str(args.preset), "--params",
                   str(args.params), "--images", str(args.images), "--steps", str(args.steps), "--result", str(self.result)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        with open(self.log, "w") as log:  # a file, not a pipe: a waiting worker can never block on a full stderr
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)

    def wait_ready(self) -> None:
        self.ready = self.process.stdout.readline().strip() == "ready"

    def run(self) -> dict[str, Any]:
        """The stage's row; on failure {"stage", "error"} with the worker's stderr echoed."""
        start = time.perf_counter()
        self.process.communicate("go\n" if self.ready else "")
        process_s = time.perf_counter() - start  # model building, planning and warm-up included
        if self.process.returncode != 0:
            stderr = self.log.read_text()
            lines = stderr.strip().splitlines()
            if len(lines) > 1:  # a traceback: the table shows its last line only
                sys.stderr.write(stderr[-4000:])
            return {"stage": self.stage, "error": lines[-1] if lines else f"exit status {self.process.returncode}", "process_s": process_s}
        return {"stage": self.stage, **json.loads(self.result.read_text()), "process_s": process_s}


def run_stages(stages: list[str], args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Workers start a core's worth at a time (the torch and timm imports take seconds each); their
    stages then run one after another."""
    rows: list[dict[str, Any]] = []
    per_wave = os.cpu_count() or 1
    for first in range(0, len(stages), per_wave):
        wave = [StageProcess(stage, args, folder) for stage in stages[first : first + per_wave]]
        for process in wave:
            process.wait_ready()
        for process in wave:
            print(f"[{len(rows) + 1}/{len(stages)}] {process.stage} ...", flush=True)
            rows.append(process.run())
    return rows


def hours(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| stage | items | unit | items/s | host peak GiB | CUDA peak GiB | planned peak GiB | projected h:mm | setting |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['stage']} | - | - | - | - | - | - | - | FAILED: {row['error'].replace('|', '/')} |")
            continue
        cuda = "-" if row["cuda_peak_gib"] is None else f"{row['cuda_peak_gib']:.2f}"
        planned = f"{row['planned_peak_gib']:.2f}" if "planned_peak_gib" in row else "-"
        lines.append(f"| {row['stage']} | {row['items']} | {row['unit']} | {row['rate']:.3g} | {row['host_peak_gib']:.2f} | "
                     f"{cuda} | {planned} | {hours(row['projected_s'])} | {row['setting']} |")
    return "\n".join(lines)


def machine(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU model and cores from this process; torch, device and threads as the workers saw them."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    seen = next((row for row in rows if "torch" in row), {})
    return {"cpu": cpu or "unknown", "cores": os.cpu_count(), "torch": seen.get("torch", "-"), "device": seen.get("device", "-"),
            "threads": seen.get("threads", "-")}


def report(args: argparse.Namespace, scale: DatasetScale, rows: list[dict[str, Any]]) -> None:
    done = [row for row in rows if "error" not in row]
    total = sum(row["projected_s"] for row in done)
    info = machine(rows)
    print(table(rows))
    print(f"total projected: {hours(total)} (h:mm) for the {len(done)} stages timed above on {scale.name}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, device {info['device']}, "
          f"{info['threads']} torch threads")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"preset": str(args.preset), "dataset": scale.name, "rows": rows,
                                         "total_projected_s": total, "machine": info}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.worker:
            serve_stage(args)
            sys.stdout.flush()
            os._exit(0)  # skips the interpreter's teardown of torch and timm (seconds); the result file is closed
        scale = dataset_scale(load_params(args.params, args.preset))
        stages = selected(args.stages)
    except InputError as error:
        print(f"bench_scale: {error}", file=sys.stderr)
        return 2
    print(f"bench_scale: {args.preset} on {scale.name}: generated {scale.width}x{scale.height} images per stage: {args.images}, "
          f"timed steps per training stage: {args.steps}", flush=True)
    with tempfile.TemporaryDirectory() as results:
        rows = run_stages(stages, args, Path(results))
    report(args, scale, rows)
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
