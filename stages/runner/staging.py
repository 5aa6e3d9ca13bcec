"""Staging folders: where a stage keeps finished work (store shards, epoch checkpoints) until it
commits, so that a rerun after a crash or preemption continues instead of starting over.

A folder is keyed by a fingerprint of everything DVC would rerun the stage for: its entry in
dvc.yaml (command, deps, params, outs), the values of its params, and each dependency's
size and modification time. Times, not contents: fingerprinting must stay cheap on a
COCO-size image folder (one stat per file, no reads). A changed param, code file or input
gives a new fingerprint, and the stale folder is removed. The folder is never a DVC output;
the stage removes it once its outputs are in place.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.distributed import Group, leave
from stages.runner.outputs import echo
from stages.runner.params import StageParams
from stages.runner.paths import STAGING

DVC_FILE = Path("dvc.yaml")
_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _signature(path: Path) -> list:
    """(relative path, size, mtime in ns) of a file, or of every file under a folder."""
    if path.is_file():
        stat = path.stat()
        return [[".", stat.st_size, stat.st_mtime_ns]]
    entries = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")  # bytecode is not a changed input (.dvcignore)
        for name in sorted(files):
            stat = os.stat(os.path.join(folder, name))
            entries.append([os.path.relpath(os.path.join(folder, name), path), stat.st_size, stat.st_mtime_ns])
    return entries


def fingerprint(stage: str, params: StageParams) -> str | None:
    """A short hex digest of the stage's definition, params and inputs; None outside a DVC project."""
    if not DVC_FILE.is_file():
        return None
    entry = (yaml.safe_load(DVC_FILE.read_text()).get("stages") or {}).get(stage)
    if entry is None:
        echo(f"{stage}: {DVC_FILE} has no stage '{stage}', so an interrupted run will start over (resuming needs the stage's entry)")
        return None
    keys = [key for key in entry.get("params", []) if isinstance(key, str)]
    deps = [_INTERPOLATION.sub(lambda m: str(_lookup(params.raw, m.group(1))), dep) for dep in entry.get("deps", [])]
    record = {"entry": entry, "params": {key: _lookup(params.raw, key) for key in keys},
              "deps": {dep: _signature(Path(dep)) if Path(dep).exists() else None for dep in deps}}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def staging_folder(stage: str, params: StageParams, group: Group) -> Path | None:
    """This run's staging folder (created), shared by all ranks; None when the stage cannot be
    fingerprinted (no dvc.yaml entry), which turns resuming off. Rank 0 fingerprints and
    removes the stage's folders of other fingerprints."""
    folder = None
    if group.is_main:
        digest = fingerprint(stage, params)
        if digest is not None:
            folder = STAGING / stage / digest
            for stale in (STAGING / stage).glob("*"):
                if stale != folder:
                    shutil.rmtree(stale, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
    return group.broadcast(folder)


def remove_staging(folder: Path | None, group: Group) -> None:
    """Drop a committed stage's staging folder (rank 0, once every rank is past its last write)."""
    group.barrier()
    if folder is not None and group.is_main:
        shutil.rmtree(folder, ignore_errors=True)
        if folder.parent.is_dir() and not any(folder.parent.iterdir()):
            folder.parent.rmdir()


def resuming_note(stage: str, done: int, total: int, unit: str, group: Group) -> None:
    """Say on rank 0 how much of an interrupted run is kept."""
    if done and group.is_main:
        echo(f"{stage}: resuming, {done} of {total} {unit} already done")


def finish(staging: Path | None, group: Group) -> None:
    """End a committed stage: drop its staging folder, leave the process group."""
    remove_staging(staging, group)
    leave(group)
