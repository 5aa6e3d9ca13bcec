"""Typed, frozen configuration classes: how a setting is declared once and checked.

Each stage has one config class, defined next to the library function that takes it whole.
A field says its type (the annotation), its range and its meaning in one place, with
:func:`knob`; there are no default values: params.yaml holds every value, and
:func:`from_mapping` builds a config from such a mapping, refusing unknown, missing,
mistyped and out-of-range keys with a message that names the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pipeline.core.errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """A setting is missing, unknown, of the wrong type or out of range; the message names it."""


def knob(doc: str, low: float | None = None, high: float | None = None, *, length: int | None = None,
         choices: Sequence[str] | Callable[[], Sequence[str]] | None = None, optional: bool = False, default: Any = None) -> Any:
    """A config field: its meaning, inclusive range (of each item, for a list), list length,
    allowed strings (a sequence, or a callable returning one, e.g. a registry's names), and
    whether the key may be left out: ``optional`` (it is then None; e.g. the subsection of a
    format not chosen), or with a ``default`` it then takes (a convention, e.g. labels.csv).
    Every other key is required: params.yaml states its value."""
    metadata = {"doc": doc, "low": low, "high": high, "length": length, "choices": choices, "optional": optional or default is not None}
    if default is None:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def from_mapping(cls: type[T], raw: Any, where: str) -> T:
    """Build config class ``cls`` from ``raw`` (e.g. a params.yaml section named ``where``).

    Every field must be present with the right type and within its range; unknown keys are
    refused; a class's ``check()`` method, if any, then tests relations between fields.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'{where}' must be a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key '{where}.{unknown[0]}' (valid keys in '{where}': {', '.join(fields)}); check the spelling")
    missing = [k for k in fields if k not in raw and not fields[k].metadata.get("optional")]
    if missing:
        raise ConfigError(f"key '{where}.{missing[0]}' is missing; add it (see the project's params.yaml)")
    absent = {k: None if fields[k].default is dataclasses.MISSING else fields[k].default for k in fields}
    config = cls(**{k: check_value(raw[k], hints[k], f"{where}.{k}", fields[k].metadata) if k in raw else absent[k] for k in fields})
    check = getattr(config, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as error:
            raise ConfigError(f"'{where}': {error}") from None
    return config


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(field, type and range, meaning) of each field of a config class, for help texts and docs."""
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        kind = _type_name(hints[field.name], meta)
        low, high = meta.get("low"), meta.get("high")
        if low is not None or high is not None:
            kind += f" in [{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        rows.append((field.name, kind, meta.get("doc", "")))
    return rows


def _choices(metadata: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    choices = (metadata or {}).get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def _type_name(kind: Any, metadata: Mapping[str, Any] | None = None) -> str:
    origin = get_origin(kind)
    choices = _choices(metadata)
    if choices is not None and kind is str:
        return " | ".join(repr(c) for c in choices)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(kind))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a, metadata) for a in get_args(kind))
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(kind)[0], metadata)}"
    if kind is type(None):
        return "null"
    return getattr(kind, "__name__", str(kind))


def check_value(raw: Any, kind: Any, where: str, metadata: Mapping[str, Any] | None = None) -> Any:
    """``raw`` checked against type ``kind`` and the field's metadata; lists come back as tuples
    when ``kind`` is a tuple type, so configs stay hashable."""
    origin = get_origin(kind)
    wrong = ConfigError(f"'{where}' must be {_type_name(kind, metadata)}, got {raw!r}")
    if dataclasses.is_dataclass(kind):
        return from_mapping(kind, raw, where)
    if origin is Literal:
        if raw is False and "off" in get_args(kind):
            return "off"  # YAML 1.1 reads a bare off as false, and `dvc exp run -S` writes it bare
        if raw not in get_args(kind):
            raise wrong
        return raw
    if origin in (Union, types.UnionType):
        for option in get_args(kind):
            try:
                return check_value(raw, option, where, metadata)
            except ConfigError:
                continue
        raise wrong
    if origin in (list, tuple):
        if not isinstance(raw, (list, tuple)):
            raise wrong
        length = (metadata or {}).get("length")
        if length is not None and len(raw) != length:
            raise ConfigError(f"'{where}' must be a list of {length} items, got {list(raw)!r}")
        items = [check_value(item, get_args(kind)[0], f"{where}[{i}]", metadata) for i, item in enumerate(raw)]
        return tuple(items) if origin is tuple else items
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
        choices = _choices(metadata)
        if not isinstance(raw, str) or not raw or (choices is not None and raw not in choices):
            raise wrong
        return raw
    low, high = (metadata or {}).get("low"), (metadata or {}).get("high")
    if (low is not None and raw < low) or (high is not None and raw > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"'{where}' = {raw!r} is out of range {bounds}")
    return raw
