"""Label-map resizing shared by stages."""
from __future__ import annotations

import numpy as np
from PIL import Image


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 label map to (height, width); labels are never blended.

    This is how AffinityNet's labels reach feature resolution here (as IRN reduces its label
    maps); PSA instead averages the two CRF score maps over 8x8 cells before deciding.
    """
    if labels.shape == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))
