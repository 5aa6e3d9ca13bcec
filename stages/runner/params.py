"""Reading params.yaml: a section is validated against its stage's config class.

The config classes live next to the library functions that take them (for example
`pipeline.refine.confident.CRFConfig`); each states its fields' types, ranges and meanings once, and
`pipeline.core.config.from_mapping` checks them. This module only reads the file and names it in
errors. A stage imports its own config class only, so its code deps stay its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
import yaml

from pipeline.core.config import ConfigError, check_value, from_mapping
from pipeline.core.errors import InputError

if TYPE_CHECKING:
    import torch

    from pipeline.core.distributed import Group

T = TypeVar("T")

PARAMS_OPTION = typer.Option(Path("params.yaml"), "--params", help="Parameter file to read instead of params.yaml.")


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


class StageParams:
    """A params file read once; a stage validates the keys it declares in dvc.yaml, and errors
    name the file (``source``)."""

    def __init__(self, path: Path) -> None:
        self.source = str(path)
        self.raw = load(path)

    def section(self, name: str, cls: type[T]) -> T:
        return section(self.raw, name, cls, self.source)

    def device(self) -> torch.device:
        """The top-level ``device`` (auto, cpu, cuda, cuda:N), resolved."""
        from pipeline.core.device import (
            resolve_device,  # torch only for the stages that use a device
        )

        return resolve_device(value(self.raw, "device", str, self.source))

    def join(self, cpu_only: bool = False) -> tuple[Group, torch.device]:
        """This process's rank group (one process unless torchrun started several) and its device
        (the CPU for a stage that never uses a GPU, such as crf_labels)."""
        import torch

        from pipeline.core.distributed import DistributedConfig, join

        return join(torch.device("cpu") if cpu_only else self.device(), self.section("distributed", DistributedConfig))

    def shard_size(self) -> int:
        from pipeline.core.artifacts import StorageConfig

        return self.section("storage", StorageConfig).shard_size
