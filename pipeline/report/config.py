"""The ``report`` section of params.yaml."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.config import knob


@dataclass(frozen=True)
class ReportConfig:
    """The ``report`` section: the example gallery."""

    gallery_split: str = knob("split the gallery's example images come from")
    gallery_images: int = knob("rows of the gallery", 0, 100)
