"""Cost of each explanation method per image, against one training step on the same batch.

    python benchmarks/bench_explain.py                          # ViT-B/16 at 224, batch 1 and 8, CPU
    python benchmarks/bench_explain.py --model vit_tiny_patch16_224 --img-size 64 --repeats 2

The training step is forward + cross-entropy + backward with parameter gradients (no optimizer
step) on a copy of the model in train mode; methods run on the model in eval mode. Times are
medians over ``--repeats`` runs after one warm-up run. Random weights (no download).

The last column counts the floating-point operations of matrix products and convolutions
(torch's FlopCounterMode, attention kernels included) of each method against the training
step on the largest batch. Matmuls dominate both, so this ratio is about the lowest time ratio
a method can reach while its matmuls run as fast as the training step's.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import (
    FlopCounterMode,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.explain import METHODS, explain


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def counted_flops(fn: Callable[[], object]) -> int:
    """Matmul and convolution FLOPs of one call of ``fn``."""
    aten = torch.ops.aten
    # torch has formulas for the CUDA attention kernels, not for the fused CPU one timm uses
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda query, key, value, *_, **__: sdpa_flop_count(query, key, value),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad_out, query, key, value, *_, **__: sdpa_backward_flop_count(grad_out, query, key, value),
    }
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        fn()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224", help="timm model name")
    parser.add_argument("--img-size", type=int, default=None, help="input size (default: the model's)")
    parser.add_argument("--num-classes", type=int, default=None, help="classes (default: the model's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--start-layer", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kwargs = {} if args.img_size is None else {"img_size": args.img_size}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    model = timm.create_model(args.model, pretrained=False, **kwargs).to(device).eval()
    trainee = copy.deepcopy(model).train()
    size = model.patch_embed.img_size
    methods = [m for m in args.methods if m != "lrp" or not hasattr(model.patch_embed, "backbone")]

    print(f"# {args.model} at {size[0]}x{size[1]}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    header = (f"{'method':<26}" + "".join(f"{f'b={b} s/img':>14}{f'b={b} ×train':>14}" for b in args.batch_sizes)
              + f"{'FLOPs ×train':>14}")
    rows: dict[str, list[str]] = {name: [] for name in ["train step (fwd+bwd)", *methods]}

    def train_step(images: torch.Tensor, labels: torch.Tensor) -> None:
        loss = F.cross_entropy(trainee(images), labels)
        loss.backward()
        trainee.zero_grad(set_to_none=True)

    gen = torch.Generator().manual_seed(0)
    for batch in args.batch_sizes:
        images = torch.randn(batch, 3, *size, generator=gen).to(device)
        labels = torch.randint(0, model.num_classes, (batch,), generator=gen).to(device)
        train = median_seconds(partial(train_step, images, labels), args.repeats, device)
        rows["train step (fwd+bwd)"] += [f"{train / batch:14.4f}", f"{1.0:14.2f}"]
        for method in methods:
            t = median_seconds(partial(explain, model, images, labels, method=method, start_layer=args.start_layer),
                               args.repeats, device)
            rows[method] += [f"{t / batch:14.4f}", f"{t / train:14.2f}"]
            print(f"  done: {method} b={batch}", file=sys.stderr, flush=True)
    # FLOPs scale with the batch: counted once, on the last batch
    train_flops = counted_flops(partial(train_step, images, labels))
    rows["train step (fwd+bwd)"].append(f"{1.0:14.2f}")
    for method in methods:
        flops = counted_flops(partial(explain, model, images, labels, method=method, start_layer=args.start_layer))
        rows[method].append(f"{flops / train_flops:14.2f}")
    print(header)
    for name, cells in rows.items():
        print(f"{name:<26}" + "".join(cells))


if __name__ == "__main__":
    main()
