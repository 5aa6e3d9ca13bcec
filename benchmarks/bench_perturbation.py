"""Throughput of the whole perturbation test (explain + positive and negative perturbation passes).

Compares batched evaluation (`--batch-size` images explained together, perturbed images in
forward chunks of `--max-batch`) with one image and one perturbed image per forward pass at a
time, as the reference scripts run. Random inputs and a randomly initialised timm model (the
timing does not depend on the weights); both runs must give identical results.

Uses ``pipeline.explain.explain`` when it is importable, otherwise a stand-in explainer
(gradient × input pooled to the token grid: one forward and one backward pass, like the
relevance methods).

    .venv/bin/python benchmarks/bench_perturbation.py --images 8 --batch-size 8
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F

from pipeline.evaluation.explanations import evaluate_method


def stand_in_explainer(model: torch.nn.Module, patch: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def explainer(images: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        images = images.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(images)
            (grad,) = torch.autograd.grad(logits.gather(1, class_ids[:, None]).sum(), images)
        return F.avg_pool2d((grad * images).sum(1, keepdim=True), patch)[:, 0]

    return explainer


def run(model, images, labels, normalise, explainer, batch_size: int, max_batch: int, mode: str) -> tuple[dict, float]:
    batches = [{"images": images[i:i + batch_size], "labels": labels[i:i + batch_size]} for i in range(0, len(images), batch_size)]
    start = time.perf_counter()
    result = evaluate_method(model, batches, normalise, explainer, perturbation_modes=(mode,), segmentation_mode=None, max_batch=max_batch)
    if images.is_cuda:
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224", help="timm model name (random init)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--method", default="transformer_attribution", help="pipeline.explain method, when available")
    parser.add_argument("--mode", choices=["predicted", "target"], default="predicted")
    parser.add_argument("--images", type=int, default=8, help="images timed per configuration")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=64, help="perturbed images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip-single", action="store_true", help="time only the batched configuration")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=args.num_classes, img_size=args.img_size).eval().to(device)
    try:
        from pipeline.explain import explain

        explainer, explainer_name = functools.partial(explain, model, method=args.method), f"pipeline.explain:{args.method}"
    except ImportError:
        explainer, explainer_name = stand_in_explainer(model, model.patch_embed.patch_size[0]), "stand-in gradient x input"
    mean = torch.tensor(model.pretrained_cfg.get("mean", (0.5, 0.5, 0.5)), device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg.get("std", (0.5, 0.5, 0.5)), device=device).view(1, 3, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - mean) / std

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, 3, args.img_size, args.img_size, generator=generator).to(device)
    labels = torch.randint(0, args.num_classes, (args.images,), generator=generator).to(device)
    run(model, images[:1], labels[:1], normalise, explainer, 1, args.max_batch, args.mode)  # warm-up

    report = {"model": args.model, "img_size": args.img_size, "explainer": explainer_name, "device": str(device),
              "threads": torch.get_num_threads(), "images": args.images, "forward_passes_per_image": 1 + 2 * 9}
    batched, seconds = run(model, images, labels, normalise, explainer, args.batch_size, args.max_batch, args.mode)
    report["batched"] = {"batch_size": args.batch_size, "max_batch": args.max_batch, "seconds": round(seconds, 3), "images_per_s": round(args.images / seconds, 3)}
    if not args.skip_single:
        single, seconds = run(model, images, labels, normalise, explainer, 1, 1, args.mode)
        report["single"] = {"batch_size": 1, "max_batch": 1, "seconds": round(seconds, 3), "images_per_s": round(args.images / seconds, 3)}
        report["speedup"] = round(report["batched"]["images_per_s"] / report["single"]["images_per_s"], 2)
        report["identical_results"] = batched == single
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
