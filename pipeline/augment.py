"""Training augmentation on uint8 image batches: random mirror and colour jitter, from a seeded generator."""
from __future__ import annotations

import numpy as np
import torch


def color_jitter(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation factors in [1 - s, 1 + s] per image, on [0, 1] floats."""
    if strength <= 0:
        return images
    b = images.shape[0]

    def factors() -> torch.Tensor:
        return (1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * strength).to(images.device)

    images = images * factors()
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factors() + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * factors() + grey
    return images.clamp(0, 1)


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror each image of (B, C, H, W) with probability 1/2; also returns which were mirrored (B,) on the CPU."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images), flip


def augment(images: torch.Tensor, hflip: bool, jitter: float, generator: torch.Generator,
            labels: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """uint8 (B, 3, H, W) to augmented [0, 1] floats: random mirror, then colour jitter.

    ``labels`` (B, h, w), if given, are mirrored with their images (a copy; jitter leaves them
    alone). Every training draws from ``generator`` in this order, so a seed fixes the lot.
    """
    x = images.float() / 255.0
    if hflip:
        x, flip = random_hflip(x, generator)
        if labels is not None:
            labels = labels.copy()
            labels[flip.numpy()] = labels[flip.numpy()][:, :, ::-1]
    return color_jitter(x, jitter, generator), labels
