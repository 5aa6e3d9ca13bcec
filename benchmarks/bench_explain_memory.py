"""Memory and time of one explanation per input side, with and without recomputation.

    python benchmarks/bench_explain_memory.py                                  # the VOC preset's model and scales
    python benchmarks/bench_explain_memory.py --sides 448 896 --modes recompute --repeats 1
    python benchmarks/bench_explain_memory.py --model vit_base_patch16_224 --method lrp --sides 224 448

Each (side, mode) runs in a fresh process: random weights, one (image, class) pair per call,
one warm-up call, then ``--repeats`` timed calls. Printed per row: seconds per pair, the
process's peak resident memory, the resident memory with the model alone (so the difference
is what the explanation costs), and the tensor peak of pipeline/core/memory.py's dry run (the
figure the batch planner uses; device-independent). On CUDA the peak is
torch.cuda.max_memory_allocated beyond the model instead of the resident memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 2**30


def measure(model_name: str, method: str, side: int, recompute: bool, repeats: int, threads: int) -> dict:
    """One row, in this process (call it in a fresh one: peak RSS only grows)."""
    import timm
    import torch

    from pipeline.core.memory import on_meta
    from pipeline.explain import explain
    from pipeline.explain.planning import _dry_peak

    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = timm.create_model(model_name, pretrained=False, num_classes=20, dynamic_img_size=True).eval().to(device)
    model_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    dry = _dry_peak(on_meta(model), method, 1, side, 1, recompute)
    images = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    class_ids = torch.tensor([3])
    if device.type == "cuda":
        torch.cuda.synchronize()
        model_bytes = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    explain(model, images, class_ids, method=method, start_layer=1, recompute=recompute)
    start = time.perf_counter()
    for _ in range(repeats):
        explain(model, images, class_ids, method=method, start_layer=1, recompute=recompute)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    row = {"side": side, "mode": "recompute" if recompute else "keep", "s_per_pair": seconds,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
           "model_rss_gib": model_rss / GIB, "dry_run_gib": dry / GIB, "device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        row["cuda_peak_beyond_model_gib"] = (torch.cuda.max_memory_allocated() - model_bytes) / GIB
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_r50_s16_384")
    parser.add_argument("--method", default="transformer_attribution")
    parser.add_argument("--sides", type=int, nargs="+", default=[224, 448, 672, 896])
    parser.add_argument("--modes", nargs="+", choices=["keep", "recompute"], default=["keep", "recompute"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "side,mode" measured in this process
    args = parser.parse_args()
    if args.one:
        side, mode = args.one.split(",")
        print(json.dumps(measure(args.model, args.method, int(side), mode == "recompute", args.repeats, args.threads)))
        return
    rows = []
    print(f"{args.method} on {args.model}, random weights, one pair per call")
    print("| side | mode | s / pair | peak RSS GiB | model alone GiB | beyond the model GiB | dry-run tensor peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for side in args.sides:
        for mode in args.modes:
            command = [sys.executable, __file__, "--model", args.model, "--method", args.method, "--repeats", str(args.repeats),
                       "--threads", str(args.threads), "--one", f"{side},{mode}"]
            row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append(row)
            beyond = row.get("cuda_peak_beyond_model_gib", row["peak_rss_gib"] - row["model_rss_gib"])
            print(f"| {side} | {mode} | {row['s_per_pair']:.2f} | {row['peak_rss_gib']:.2f} | {row['model_rss_gib']:.2f} "
                  f"| {beyond:.2f} | {row['dry_run_gib']:.2f} |", flush=True)
    if rows:
        print(f"device {rows[0]['device']}, torch {rows[0]['torch']}, {args.threads} threads")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
