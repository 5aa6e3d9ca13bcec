"""What pinned CPU numerics cost (pipeline/core/numerics.py): the demo's heavy steps, pinned against native.

    python benchmarks/bench_numerics.py [--steps 6] [--threads 2]

Each (mode, workload) runs in a fresh process, since the kernel path is read when torch loads:
a training step of the demo classifier (batch 32, 128 px), a training step of the demo
segmenter (DeepLab head on the classifier, batch 16, 96 px crops), and transformer attribution
on a batch of 16 images. Prints the median seconds per step and pinned / native.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, statistics, sys, time
from pipeline.core import numerics
numerics.pin_environment()
import torch
from pipeline.classifier.model import DemoHybridConfig, demo_hybrid
from pipeline.explain import explain

workload, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
config = DemoHybridConfig(stem_channels=(32, 64, 128), embed_dim=192, depth=4, num_heads=3, mlp_ratio=2.0, patch_size=2)
model = demo_hybrid(6, 128, config)
if workload == "classifier step":
    images, targets = torch.rand(32, 3, 128, 128), (torch.rand(32, 6) > 0.5).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    def step():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), targets)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
elif workload == "segmenter step":
    from pipeline.segmentation.net import Segmenter, SegmenterConfig, ViTBackbone
    head = SegmenterConfig(backbone="classifier", weights=False, aspp_rates=[1, 2, 3], aspp_channels=128, low_level_channels=48, dropout=0.1)
    net = Segmenter(ViTBackbone(demo_hybrid(6, 128, config, dynamic_img_size=True)), 7, head)
    images, targets = torch.rand(16, 3, 96, 96), torch.randint(0, 7, (16, 96, 96))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    def step():
        loss = torch.nn.functional.cross_entropy(net(images), targets)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
else:
    model.eval()
    images, classes = torch.rand(16, 3, 128, 128), torch.randint(0, 6, (16,))
    def step():
        explain(model, images, classes, method="transformer_attribution")
step()  # warm-up
times = []
for _ in range(steps):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times)))
"""

WORKLOADS = ("classifier step", "segmenter step", "transformer attribution, 16 images")


def measure(mode: str, workload: str, steps: int, threads: int) -> float:
    env = {**os.environ, "WSSS_CPU_KERNELS": mode, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", WORKER, workload, str(steps)], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"| workload ({args.threads} threads, median of {args.steps}) | native s | pinned s | pinned / native |")
    print("|---|---|---|---|")
    for workload in WORKLOADS:
        native, pinned = (measure(mode, workload, args.steps, args.threads) for mode in ("native", "pinned"))
        print(f"| {workload} | {native:.3f} | {pinned:.3f} | {pinned / native:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
