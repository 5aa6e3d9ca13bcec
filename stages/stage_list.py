"""The DVC stages in pipeline order: command name, module, one-line description.

Kept apart from the CLI so that tooling (code deps, checks) can list the stages without
importing any of them.
"""
from __future__ import annotations

STAGES: tuple[tuple[str, str, str], ...] = (
    ("synthetic", "stages.synthetic", "Generate the built-in shapes dataset in VOC layout (data/synthetic)."),
    ("dataset", "stages.dataset", "Index and validate a VOC, COCO or folder+CSV dataset into data/dataset.zarr (ids, splits, labels, sizes)."),
    ("masks", "stages.masks", "Ground-truth masks, read or rasterised, into data/masks.zarr (evaluation only)."),
    ("train_cls", "stages.train_cls", "Train the ViT multi-label classifier (data/models/classifier.pt)."),
    ("cams", "stages.cams", "Relevance seeds per present class on the token grid (data/cams.zarr)."),
    ("crf_labels", "stages.crf_labels", "Dense-CRF confident foreground/background labels (data/crf_labels.zarr)."),
    ("aff_pairs", "stages.aff_pairs", "Labels at feature resolution and pair codes within the radius (data/aff_pairs.zarr)."),
    ("train_aff", "stages.train_aff", "Train AffinityNet on the confident pairs (data/models/affinitynet.pt)."),
    ("random_walk", "stages.random_walk", "Random walk of the seeds over AffinityNet affinities (data/refined.zarr, PNGs)."),
    ("evaluate", "stages.evaluate", "mIoU of seeds, CRF labels and random-walk masks (metrics/segmentation.json)."),
    ("train_seg", "stages.train_seg", "Train the segmentation network on the pseudo-masks (data/models/segmenter.pt)."),
    ("evaluate_seg", "stages.evaluate_seg", "Segment evaluate_seg.split, without and with CRF, and score it (metrics/segmenter.json)."),
    ("explain_eval", "stages.explain_eval", "Perturbation and segmentation tests of each explanation method (metrics/explainability.json)."),
    ("report", "stages.report", "Self-contained HTML report: tables, curves, example gallery (report/index.html)."),
)

STAGE_MODULES: dict[str, str] = {name: module for name, module, _ in STAGES}

# Stages that run as torchrun processes when `distributed.nproc_per_node` asks for several:
# the torch stages, and crf_labels (CPU only), which splits its shards the same way.
DISTRIBUTED: frozenset[str] = frozenset({"train_cls", "cams", "crf_labels", "train_aff", "random_walk", "train_seg",
                                         "evaluate_seg", "explain_eval"})
# Of those, the ones that never use a GPU: `nproc_per_node: auto` means 1 process for them.
CPU_ONLY: frozenset[str] = frozenset({"crf_labels"})
