"""Config objects for tests: the project's params.yaml values, with the fields a test changes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.core.config import from_mapping

T = TypeVar("T")
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def project_config(section: str, cls: type[T], **overrides: Any) -> T:
    """``cls`` built (and validated) from params.yaml's ``section`` with ``overrides`` applied."""
    raw = yaml.safe_load(PARAMS.read_text())[section]
    return from_mapping(cls, {**raw, **overrides}, section)
