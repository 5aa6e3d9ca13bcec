"""On a CUDA machine: every explanation method gives the same maps on GPU as on CPU.

Usage: python benchmarks/check_cuda.py [--model vit_tiny_patch16_224] [--img-size 224] [--batch 4]
Exits non-zero when CUDA is absent or a method differs by more than 1e-4 relative (float32).
"""
from __future__ import annotations

import argparse
import sys

import timm
import torch

from pipeline.explain import METHODS, explain


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available on this machine")
        return 2
    # full float32 on the GPU too: TF32 matmuls/convolutions would differ from the CPU by ~1e-3
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=10, img_size=args.img_size).eval()
    images = torch.randn(args.batch, 3, args.img_size, args.img_size)
    class_ids = torch.arange(args.batch) % 10
    worst = 0.0
    for method in METHODS:
        cpu = explain(model, images, class_ids, method=method)
        gpu = explain(model.cuda(), images.cuda(), class_ids.cuda(), method=method).cpu()
        model.cpu()
        error = float((gpu - cpu).abs().max() / cpu.abs().max().clamp_min(1e-12))
        worst = max(worst, error)
        print(f"{method:<26} max relative difference {error:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
