"""A stage's files beside its stores: JSON and CSV written atomically with fixed formatting, and messages."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import typer

from pipeline.core.files import write_text


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Sorted keys and fixed formatting so the same numbers give the same bytes."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def echo(message: str) -> None:
    typer.echo(message, err=True)
