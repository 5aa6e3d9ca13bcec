"""Atomic writes: build a file or folder beside its final path, then rename it into place.

A reader (or a later stage) then sees the old version or the complete new one, never a
half-written one; a failure removes the temporary and leaves the old version as it was.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh hidden name in ``path``'s folder (created if missing), for building ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def discard(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def commit(tmp: Path, path: str | os.PathLike) -> None:
    """Put ``tmp`` at ``path``, replacing what was there (a folder is removed first)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write a file or folder to; it becomes ``path`` on success."""
    tmp = temporary_sibling(path)
    try:
        yield tmp
    except BaseException:
        discard(tmp)
        raise
    commit(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def id_filename(image_id: str) -> str:
    """A file name (no folders) for an image id: ids from a folder dataset hold "/" ("cats/001").
    Percent-encoding is one-to-one, so two ids never share a file; VOC and COCO ids are unchanged."""
    return quote(image_id, safe="")
