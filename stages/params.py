"""params.yaml sections as typed dataclasses, validated strictly.

A stage asks for the sections it reads; every key is checked for presence, type and range,
and an unknown key (a typo) stops the stage naming it. There are no silent defaults: the
dataclasses below have no default values, params.yaml is the one place values live.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union, get_args, get_origin

import yaml

from pipeline.errors import InputError

T = TypeVar("T")


class ParamsError(InputError):
    """A params file is missing, malformed, or has a wrong, missing or unknown key."""


def spec(low: float | None = None, high: float | None = None, doc: str = "", length: int | None = None) -> Any:
    """A dataclass field carrying an inclusive numeric range (of each item, for a list) and a list length."""
    return dataclasses.field(metadata={"low": low, "high": high, "doc": doc, "length": length})


# --- sections -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SyntheticParams:
    num_train: int = spec(1)
    num_val: int = spec(1)
    image_size: int = spec(32, 1024)
    num_classes: int = spec(2, 10)
    objects: list[int] = spec(1, 10, length=2, doc="(min, max) objects drawn per image")
    scale: list[float] = spec(0.02, 0.5, length=2, doc="(min, max) object radius, fraction of the image side")
    clutter: float = spec(0.0, 10.0, doc="distractors: on average 3 x clutter blobs and 5 x clutter strokes")
    seed: int = spec(0)


@dataclasses.dataclass(frozen=True)
class DatasetParams:
    root: str
    splits: list[str]
    use_aug: bool


@dataclasses.dataclass(frozen=True)
class DemoHybridParams:
    stem_channels: list[int]
    embed_dim: int = spec(8)
    depth: int = spec(1)
    num_heads: int = spec(1)
    mlp_ratio: float = spec(0.5, 8)
    patch_size: int = spec(1, 8)


@dataclasses.dataclass(frozen=True)
class TrainClsParams:
    model: str
    demo_hybrid: DemoHybridParams
    pretrained: Union[bool, str]
    image_size: int = spec(32, 1024)
    epochs: int = spec(1)
    batch_size: int = spec(1)
    lr: float = spec(0.0, 10.0)
    weight_decay: float = spec(0.0, 1.0)
    optimizer: Literal["sgd", "adamw"] = spec()
    schedule: Literal["poly", "cosine"] = spec()
    warmup_epochs: int = spec(0)
    hflip: bool = spec()
    color_jitter: float = spec(0.0, 1.0)
    seed: int = spec(0)
    train_split: str = spec()
    val_split: str = spec()


@dataclasses.dataclass(frozen=True)
class CamsParams:
    method: Literal["transformer_attribution", "rollout", "raw_attention", "gradcam", "partial_lrp", "lrp"]
    splits: list[str]
    scales: list[float]
    flip: bool
    image_size: int = spec(16, 2048)
    start_layer: int = spec(0)
    batch_size: int = spec(1)


@dataclasses.dataclass(frozen=True)
class CrfParams:
    alpha_low: float = spec(0.0)
    alpha_high: float = spec(0.0)
    gauss_sxy: float = spec(0.0)
    gauss_compat: float = spec(0.0)
    bilateral_sxy: float = spec(0.0)
    bilateral_srgb: float = spec(0.0)
    bilateral_compat: float = spec(0.0)
    iterations: int = spec(1)
    reference_side: int = spec(1)
    scale_with_image: bool = spec()
    workers: int = spec(1)


@dataclasses.dataclass(frozen=True)
class AffPairsParams:
    split: str
    radius: int = spec(2, 16)
    image_size: int = spec(16, 2048)


@dataclasses.dataclass(frozen=True)
class TrainAffParams:
    epochs: int = spec(1)
    lr: float = spec(0.0, 10.0)
    batch_size: int = spec(1)
    weight_decay: float = spec(0.0, 1.0)
    poly_power: float = spec(0.0, 10.0)
    new_layer_lr_mult: float = spec(0.0, 1000.0)
    hidden_channels: int = spec(1)
    out_channels: int = spec(1)
    freeze_backbone_norm: bool = spec()
    hflip: bool = spec()
    color_jitter: float = spec(0.0, 1.0)
    seed: int = spec(0)


@dataclasses.dataclass(frozen=True)
class RandomWalkParams:
    beta: float = spec(1.0, 256.0)
    steps: int = spec(0)
    alpha: float = spec(0.0)
    radius: int = spec(2, 16)


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    split: str
    seed_background: float = spec(0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class ImageNetEvalParams:
    model: str
    pretrained: Union[bool, str]
    val_root: Optional[str]
    labels_file: Optional[str]
    segmentation_file: Optional[str]
    image_size: int = spec(16, 2048)


@dataclasses.dataclass(frozen=True)
class ExplainEvalParams:
    source: Literal["dataset", "imagenet"]
    methods: list[Literal["transformer_attribution", "rollout", "raw_attention", "gradcam", "partial_lrp", "lrp"]]
    split: str
    imagenet: ImageNetEvalParams
    max_images: int = spec(0)
    batch_size: int = spec(1)
    max_forward_batch: int = spec(1)
    start_layer: int = spec(0)


@dataclasses.dataclass(frozen=True)
class ReportParams:
    gallery_split: str
    gallery_images: int = spec(0, 100)


def _check_params_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found; run from the project root or pass --params FILE")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return data


def load(path: str | Path) -> dict[str, Any]:
    """The raw params mapping of a YAML file."""
    return _check_params_file(Path(path))


def section(params: dict[str, Any], name: str, cls: type[T], source: str = "params.yaml") -> T:
    """Validate `params[name]` against dataclass `cls` and build it."""
    if name not in params:
        raise ParamsError(f"{source}: section '{name}' is missing; add it (see the project's params.yaml)")
    return _build(params[name], cls, name, source)


def value(params: dict[str, Any], key: str, kind: Any, source: str = "params.yaml") -> Any:
    """Validate a top-level scalar key (e.g. `device`)."""
    if key not in params:
        raise ParamsError(f"{source}: key '{key}' is missing; add it (see the project's params.yaml)")
    return _check(params[key], kind, key, source, None)


def _build(raw: Any, cls: type[T], where: str, source: str) -> T:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: '{where}' must be a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"{source}: unknown key '{where}.{unknown[0]}' (valid keys in '{where}': {', '.join(fields)}); check the spelling")
    missing = [k for k in fields if k not in raw]
    if missing:
        raise ParamsError(f"{source}: key '{where}.{missing[0]}' is missing; add it (see the project's params.yaml)")
    values = {k: _check(raw[k], hints[k], f"{where}.{k}", source, fields[k].metadata) for k in fields}
    return cls(**values)


def _type_name(kind: Any) -> str:
    origin = get_origin(kind)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(kind))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(kind))
    if origin is list:
        return f"a list of {_type_name(get_args(kind)[0])}"
    if kind is type(None):
        return "null"
    return getattr(kind, "__name__", str(kind))


def _check(raw: Any, kind: Any, where: str, source: str, metadata: Any) -> Any:
    origin = get_origin(kind)
    wrong = ParamsError(f"{source}: '{where}' must be {_type_name(kind)}, got {raw!r}")
    if dataclasses.is_dataclass(kind):
        return _build(raw, kind, where, source)
    if origin is Literal:
        if raw not in get_args(kind):
            raise wrong
        return raw
    if origin in (Union, types.UnionType):
        for option in get_args(kind):
            try:
                return _check(raw, option, where, source, metadata)
            except ParamsError:
                continue
        raise wrong
    if origin is list:
        if not isinstance(raw, list):
            raise wrong
        length = (metadata or {}).get("length")
        if length is not None and len(raw) != length:
            raise ParamsError(f"{source}: '{where}' must be a list of {length} items, got {raw!r}")
        return [_check(item, get_args(kind)[0], f"{where}[{i}]", source, metadata) for i, item in enumerate(raw)]
    if kind is type(None):
        if raw is not None:
            raise wrong
        return None
    if kind is bool:
        if not isinstance(raw, bool):
            raise wrong
        return raw
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise wrong
    elif kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise wrong
        raw = float(raw)
    elif kind is str:
        if not isinstance(raw, str) or not raw:
            raise wrong
        return raw
    if metadata:
        low, high = metadata.get("low"), metadata.get("high")
        if (low is not None and raw < low) or (high is not None and raw > high):
            bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise ParamsError(f"{source}: '{where}' = {raw!r} is out of range {bounds}")
    return raw


# Top-level scalar keys (not sections), and what they must be.
TOP_LEVEL_VALUES: dict[str, type] = {"device": str}

# Sections by params.yaml name, for tooling and tests.
SECTIONS: dict[str, type] = {
    "synthetic": SyntheticParams,
    "dataset": DatasetParams,
    "train_cls": TrainClsParams,
    "cams": CamsParams,
    "crf": CrfParams,
    "aff_pairs": AffPairsParams,
    "train_aff": TrainAffParams,
    "random_walk": RandomWalkParams,
    "evaluate": EvaluateParams,
    "explain_eval": ExplainEvalParams,
    "report": ReportParams,
}
