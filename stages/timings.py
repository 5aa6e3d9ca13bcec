"""Where a run's time goes: the timings each stage records, as rows and as a small HTML page.

Each `wsss <stage>` writes metrics/timings/<stage>.json (wall and CPU seconds, peak memory,
processes, items per second) and then refreshes report/timings.html from all of them. The
report embeds that page rather than copying the numbers: a time belongs to the machine that
ran the stage, so it stays out of every cached output and every byte-identity check.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from pipeline.core.files import write_text
from stages.runner.paths import TIMINGS_PAGE
from stages.stage_list import STAGES

COLUMNS = ("stage", "wall s", "CPU s", "peak MiB", "processes", "items", "items/s", "finished")


def stage_timings(folder: Path) -> list[dict[str, Any]]:
    """The records in ``folder``, in pipeline order; stages without one are left out."""
    records = []
    for name in (spec.name for spec in STAGES):
        try:
            records.append(json.loads((folder / f"{name}.json").read_text()))
        except (OSError, ValueError):
            continue
    return records


def _cells(record: dict[str, Any]) -> list[str]:
    count, unit = record.get("items") or (None, "")
    return [record["stage"], f"{record['seconds']:.1f}", f"{record.get('cpu_seconds', 0):.1f}", f"{record.get('peak_memory_mib', 0):.0f}",
            str(record.get("processes", 1)), f"{count} {unit}s" if count is not None else "–",
            f"{record['items_per_second']:.1f}" if "items_per_second" in record else "–", record.get("finished", "")]


def write_page(folder: Path, page: Path = TIMINGS_PAGE) -> None:
    """The timings of ``folder`` as a self-contained HTML table at ``page``."""
    records = stage_timings(folder)
    total = sum(record["seconds"] for record in records)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _cells(record)) + "</tr>" for record in records)
    write_text(page, "<!doctype html><html><head><meta charset='utf-8'><title>stage timings</title><style>"
               "body{font-family:sans-serif;margin:0;color:#222}table{border-collapse:collapse}"
               "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f3f3f3}"
               "td:first-child,td:last-child{text-align:left}</style></head><body><table><tr>"
               + "".join(f"<th>{column}</th>" for column in COLUMNS) + f"</tr>{rows}</table>"
               f"<p>{len(records)} stages, {total:.0f} s of wall time in all (from {html.escape(str(folder))}/)</p></body></html>\n")
