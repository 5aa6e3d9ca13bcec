"""What every stage does around its own work: params, output paths, staging and resume, the
per-image and training runners (`stage.py`), and atomic JSON/CSV outputs."""
