"""Throughput of synthetic generation, classifier training and inference at the default params.

Usage: python benchmarks/bench_data_and_classifier.py [--params params.yaml] [--images 256] [--steps 10]
Prints images/s for each; no files are left behind (generation goes to a temporary folder).
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from pipeline.classifier.model import build_classifier
from pipeline.classifier.train import ClassifierConfig
from pipeline.data.preprocess import normalise, resize_square, to_tensor
from pipeline.sources.synthetic import SyntheticConfig, generate
from pipeline.sources.voc import VOCDataset
from stages.runner import params as P


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=int, default=256, help="images to generate")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    args = parser.parse_args()
    params = P.load(args.params)
    syn = P.section(params, "synthetic", SyntheticConfig)
    cls = P.section(params, "train_cls", ClassifierConfig)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate(Path(tmp) / "syn", dataclasses.replace(syn, num_train=args.images, num_val=1))
        generation = (args.images + 1) / (time.perf_counter() - start)
        voc = VOCDataset(Path(tmp) / "syn", "train")
        start = time.perf_counter()
        images = to_tensor([resize_square(voc.image(i), cls.image_size) for i in voc.ids])
        decoding = len(voc.ids) / (time.perf_counter() - start)

    model = build_classifier(cls.model, syn.num_classes, cls.image_size, False, cls.demo_hybrid)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cls.lr)
    batch = normalise(images[: cls.batch_size])
    target = torch.zeros(batch.shape[0], syn.num_classes)
    model.train()
    for step in range(args.steps + 2):  # two warm-up steps
        if step == 2:
            start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    training = args.steps * batch.shape[0] / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        model(batch)
        start = time.perf_counter()
        for _ in range(args.steps):
            model(batch)
        inference = args.steps * batch.shape[0] / (time.perf_counter() - start)

    print(f"{'what':<28}{'images/s':>10}")
    print(f"{'synthetic generation':<28}{generation:>10.1f}   ({syn.image_size} px, JPEG+PNG+XML written)")
    print(f"{'decode + resize':<28}{decoding:>10.1f}")
    print(f"{'classifier training':<28}{training:>10.1f}   ({cls.model}, {cls.image_size} px, batch {cls.batch_size}, {torch.get_num_threads()} threads)")
    print(f"{'classifier inference':<28}{inference:>10.1f}")


if __name__ == "__main__":
    main()
