"""Relevance maps for timm Vision Transformers (Chefer et al., CVPR 2021, and its baselines).

>>> maps = explain(model, images, class_ids, method="transformer_attribution")

``METHODS`` is the registry of methods (``registry.register_method``); ``rules`` holds the LRP rules.
"""
from __future__ import annotations

from . import rules
from .methods import explain
from .registry import METHODS, method_names, register_method
from .trace import check_model

__all__ = ["METHODS", "check_model", "explain", "method_names", "register_method", "rules"]
