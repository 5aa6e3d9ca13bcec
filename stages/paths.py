"""Where each stage's outputs live (the same paths dvc.yaml declares)."""
from pathlib import Path

SYNTHETIC = Path("data/synthetic")
DATASET = Path("data/dataset.zarr")
CLASSIFIER = Path("data/models/classifier.pt")
CAMS = Path("data/cams.zarr")
CRF_LABELS = Path("data/crf_labels.zarr")
AFF_PAIRS = Path("data/aff_pairs.zarr")
AFFINITYNET = Path("data/models/affinitynet.pt")
REFINED = Path("data/refined.zarr")
PSEUDO_LABELS = Path("data/pseudo_labels")
REPORT = Path("report/index.html")
