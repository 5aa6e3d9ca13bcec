"""Reading params.yaml: a section is validated against its stage's config class.

The config classes live next to the library functions that take them (for example
`pipeline.crf.CRFConfig`); each states its fields' types, ranges and meanings once, and
`pipeline.config.from_mapping` checks them. This module only reads the file and names it in
errors. A stage imports its own config class only, so its code deps stay its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.config import ConfigError, check_value, from_mapping
from pipeline.errors import InputError

T = TypeVar("T")


class ParamsError(InputError):
    """A params file is missing, malformed, or has a wrong, missing or unknown key."""


def load(path: str | Path) -> dict[str, Any]:
    """The raw params mapping of a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found; run from the project root or pass --params FILE")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return data


def section(params: dict[str, Any], name: str, cls: type[T], source: str = "params.yaml") -> T:
    """Validate `params[name]` against config class `cls` and build it."""
    if name not in params:
        raise ParamsError(f"{source}: section '{name}' is missing; add it (see the project's params.yaml)")
    try:
        return from_mapping(cls, params[name], name)
    except ConfigError as error:
        raise ParamsError(f"{source}: {error}") from None


def value(params: dict[str, Any], key: str, kind: Any, source: str = "params.yaml") -> Any:
    """Validate a top-level scalar key (e.g. `device`)."""
    if key not in params:
        raise ParamsError(f"{source}: key '{key}' is missing; add it (see the project's params.yaml)")
    try:
        return check_value(params[key], kind, key)
    except ConfigError as error:
        raise ParamsError(f"{source}: {error}") from None
