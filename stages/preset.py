"""preset: apply an overlay (configs/*.yaml) to params.yaml, validated before anything is written.

An overlay holds only the keys it changes; mappings merge key by key, any other value
(a list, a number, a string) replaces the one in params.yaml. `--set key.path=value` then
sets single keys (the value is read as YAML), e.g. the dataset's folder on this machine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from pipeline.core.errors import InputError
from pipeline.core.files import write_text
from stages.runner import params as P
from stages.runner.outputs import echo
from stages.runner.params import PARAMS_OPTION


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overlay` laid over it: mappings merge recursively, other values replace."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_settings(params: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """Apply `key.path=value` settings (values parsed as YAML); the path must exist up to its last key."""
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise InputError(f"--set {setting!r}: write key.path=value, e.g. --set dataset.root=/data/VOCdevkit/VOC2012")
        *parents, last = key.split(".")
        node = params
        for depth, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise InputError(f"--set {setting!r}: '{'.'.join(parents[:depth + 1])}' is not a section of the params")
            node = node[part]
        node[last] = yaml.safe_load(text)
    return params


def validate(params: dict[str, Any], source: str) -> None:
    """Every section against its stage's config class (as `wsss check` does), all problems at once."""
    from stages.check import (  # the config classes import torch: only here
        SECTIONS,
        TOP_LEVEL_VALUES,
    )

    problems = [f"unknown section '{name}'" for name in sorted(set(params) - set(SECTIONS) - set(TOP_LEVEL_VALUES))]
    for name, cls in SECTIONS.items():
        try:
            P.section(params, name, cls, source)
        except InputError as error:
            problems.append(str(error))
    if problems:
        raise P.ParamsError(f"{len(problems)} problem(s); nothing was written:\n  " + "\n  ".join(problems))


def main(
    preset: Path = typer.Argument(..., help="Overlay to apply, e.g. configs/voc2012.yaml."),
    params_file: Path = PARAMS_OPTION,
    settings: list[str] = typer.Option([], "--set", help="key.path=value after the overlay, e.g. dataset.root=/data/coco."),
) -> None:
    """Lay a preset over params.yaml (plus --set values), validate every section, then write it."""
    base, overlay = P.load(params_file), P.load(preset)
    params = with_settings(merged(base, overlay), settings)
    validate(params, f"{params_file} + {preset}")
    header = f"# {params_file}: the project's defaults with {preset} laid over them (wsss preset); `git diff` shows what changed.\n"
    write_text(params_file, header + yaml.safe_dump(params, sort_keys=False, default_flow_style=None, width=120))
    changed = sorted(_leaves(overlay)) + [s.partition("=")[0] for s in settings]
    echo(f"preset: {preset} applied to {params_file} ({len(changed)} keys: {', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''})")


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys
