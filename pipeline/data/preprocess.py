"""Image preprocessing shared by every model input: square resize, tensor layout, normalisation."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

# mean = std = 0.5 for every model, as the seed report trains (docs/methods.md, "From relevance to seeds").
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 to (size, size, 3) by bilinear resize (no crop, as the reference evaluation)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (B, H, W, 3) to uint8 (B, 3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).permute(0, 3, 1, 2).contiguous()


def normalise(images: torch.Tensor, mean: Sequence[float] = MEAN, std: Sequence[float] = STD) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, H, W) to the model's input space."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
