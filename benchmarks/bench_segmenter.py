"""Throughput of the segmentation network: training crops/s and inference images/s.

    python benchmarks/bench_segmenter.py                  # default params.yaml, data/models/classifier.pt
    python benchmarks/bench_segmenter.py --threads 1

Training: steps of train_seg.batch_size random crops (train_seg.crop_size) through forward,
cross-entropy, backward and an optimizer step, on random labels (the cost does not depend on
them). Inference: one image of the dataset's size (train_cls.image_size) at one scale without
flip, and with evaluate_seg's scales and flip (what evaluate_seg and `wsss predict` do),
without the CRF. Prints medians of --repeats timed runs after one warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import from_mapping  # noqa: E402
from pipeline.data.preprocess import normalise  # noqa: E402
from pipeline.segmentation.infer import EvaluateSegConfig, predict_probs  # noqa: E402
from pipeline.segmentation.net import build_segmenter  # noqa: E402
from pipeline.segmentation.train import SegTrainConfig, make_optimizer  # noqa: E402


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--classifier", default="data/models/classifier.pt")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = yaml.safe_load(Path(args.params).read_text())
    train = from_mapping(SegTrainConfig, params["train_seg"], "train_seg")
    evaluate = from_mapping(EvaluateSegConfig, params["evaluate_seg"], "evaluate_seg")
    image_size = params["train_cls"]["image_size"]
    classes = params["synthetic"]["num_classes"] + 1
    torch.manual_seed(0)
    net = build_segmenter(train.network, classes, args.classifier)
    optimizer = make_optimizer(net, train)
    crops = torch.randint(0, 256, (train.batch_size, 3, train.crop_size, train.crop_size), dtype=torch.uint8)
    labels = torch.randint(0, classes, (train.batch_size, train.crop_size, train.crop_size))

    def step() -> None:
        net.train()
        loss = F.cross_entropy(net(normalise(crops)), labels, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    image = np.random.default_rng(0).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
    step_s = median_seconds(step, args.repeats)
    single_s = median_seconds(lambda: predict_probs(net, image, [1.0], False), args.repeats)
    multi_s = median_seconds(lambda: predict_probs(net, image, evaluate.scales, evaluate.flip), args.repeats)
    print(f"threads {torch.get_num_threads()}, backbone {train.network.backbone}, {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters")
    print("| measure | setting | s | images/s |")
    print("|---|---|---|---|")
    print(f"| training step | batch {train.batch_size}, {train.crop_size} px crops | {step_s:.3f} | {train.batch_size / step_s:.1f} |")
    print(f"| inference | {image_size} px, scale 1, no flip | {single_s:.4f} | {1 / single_s:.1f} |")
    print(f"| inference | {image_size} px, scales {evaluate.scales}, flip {evaluate.flip} | {multi_s:.4f} | {1 / multi_s:.1f} |")
    print(f"multi-scale + flip costs {multi_s / single_s:.1f}x one plain forward pass")


if __name__ == "__main__":
    main()
