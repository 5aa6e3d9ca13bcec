"""The DVC stages in pipeline order, each declared once: its command, what it does, and how it runs.

Kept apart from the CLI and free of torch so that tooling (code deps, checks) can list the
stages without importing any of them; no stage imports this list, so adding one reruns nothing.
"""
from __future__ import annotations

from stages.runner.spec import StageSpec

STAGES: tuple[StageSpec, ...] = (
    StageSpec("synthetic", "Generate the built-in shapes dataset in VOC layout (data/synthetic)."),
    StageSpec("dataset", "Index and validate a VOC, COCO or folder+CSV dataset into data/dataset.zarr (ids, splits, labels, sizes)."),
    StageSpec("masks", "Ground-truth masks, read or rasterised, into data/masks.zarr (evaluation only)."),
    StageSpec("train_cls", "Train the ViT multi-label classifier (data/models/classifier.pt).", distributed=True),
    StageSpec("cams", "Relevance seeds per present class on the token grid (data/cams.zarr).", distributed=True),
    StageSpec("crf_labels", "Dense-CRF confident foreground/background labels (data/crf_labels.zarr).", distributed=True, cpu_only=True),
    StageSpec("aff_pairs", "Labels at feature resolution and pair codes within the radius (data/aff_pairs.zarr)."),
    StageSpec("train_aff", "Train AffinityNet on the confident pairs (data/models/affinitynet.pt).", distributed=True),
    StageSpec("random_walk", "Random walk of the seeds over AffinityNet affinities (data/refined.zarr, PNGs).", distributed=True),
    StageSpec("evaluate", "mIoU of seeds, CRF labels and random-walk masks (metrics/segmentation.json)."),
    StageSpec("train_seg", "Train the segmentation network on the pseudo-masks (data/models/segmenter.pt).", distributed=True),
    StageSpec("evaluate_seg", "Segment evaluate_seg.split, without and with CRF, and score it (metrics/segmenter.json).", distributed=True),
    StageSpec("explain_eval", "Perturbation and segmentation tests of each explanation method (metrics/explainability.json).",
              distributed=True),
    StageSpec("report", "Self-contained HTML report: tables, curves, example gallery (report/index.html)."),
)

STAGE_MODULES: dict[str, str] = {spec.name: spec.module for spec in STAGES}
