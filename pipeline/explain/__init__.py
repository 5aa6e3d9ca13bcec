"""Relevance maps for timm Vision Transformers (Chefer et al., CVPR 2021, and its baselines).

>>> maps = explain(model, images, class_ids, method="transformer_attribution")

``METHODS`` maps each method name to its implementation; ``rules`` holds the LRP rules.
"""
from __future__ import annotations

from . import rules
from .methods import METHODS, explain
from .trace import check_model

__all__ = ["METHODS", "check_model", "explain", "rules"]
