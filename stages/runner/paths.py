"""Where each stage's outputs live (the same paths dvc.yaml declares)."""
from pathlib import Path

SYNTHETIC = Path("data/synthetic")
DATASET = Path("data/dataset.zarr")
MASKS = Path("data/masks.zarr")
CLASSIFIER = Path("data/models/classifier.pt")
CAMS = Path("data/cams.zarr")
CRF_LABELS = Path("data/crf_labels.zarr")
AFF_PAIRS = Path("data/aff_pairs.zarr")
AFFINITYNET = Path("data/models/affinitynet.pt")
REFINED = Path("data/refined.zarr")
PSEUDO_LABELS = Path("data/pseudo_labels")
SEGMENTER = Path("data/models/segmenter.pt")
SEG_PREDICTIONS = Path("data/seg_predictions.zarr")
SEG_PREDICTION_PNGS = Path("data/seg_predictions")
REPORT = Path("report/index.html")

# Metrics and plot files (dvc.yaml declares the same paths; the report reads them from here).
CLASSIFIER_METRICS = Path("metrics/classifier.json")
CLASSIFIER_CURVE = Path("plots/classifier_training.csv")
AFF_PAIRS_METRICS = Path("metrics/aff_pairs.json")
AFFINITY_CURVE = Path("plots/affinity_training.csv")
SEGMENTATION_METRICS = Path("metrics/segmentation.json")
PER_CLASS_IOU = Path("plots/per_class_iou.csv")
CONFUSION = Path("metrics/confusion.json")
EXPLAINABILITY_METRICS = Path("metrics/explainability.json")
PERTURBATION_CURVES = Path("plots/perturbation")
SEGMENTER_CURVE = Path("plots/segmenter_training.csv")
SEGMENTER_METRICS = Path("metrics/segmenter.json")
SEGMENTER_PER_CLASS_IOU = Path("plots/segmenter_per_class_iou.csv")

# Wall time of each stage's last run on this machine (written by the `wsss` dispatcher; not a
# DVC output: a time belongs to the machine that ran the stage, not to the result).
TIMINGS = Path("metrics/timings")
TIMINGS_PAGE = Path("report/timings.html")  # the same as a table, embedded in the report (stages/timings.py)

# Unfinished work of interrupted stages, kept for a rerun to resume from (stages/runner/staging.py):
# never a DVC output, removed once the stage commits.
STAGING = Path(".staging")
