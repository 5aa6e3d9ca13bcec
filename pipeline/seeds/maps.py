"""Post-processing of relevance maps shared by seeds, evaluation and figures."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, h, w) maps to (B, *size), as the reference post-processing."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def min_max(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each (h, w) map of a (B, h, w) batch to [0, 1]; a constant map becomes all zeros."""
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(eps)).reshape(maps.shape)


def upsample_min_max(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Token-grid relevance to input resolution in [0, 1] (docs/methods.md, "From relevance to seeds")."""
    return min_max(upsample(maps, size))
