"""summary: the headline numbers of the last run as one short table, each beside the band a
healthy default run falls in (metrics/expected.json, see stages/bands.py), and what differs from
the runs that made the band (not a DVC stage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from stages import bands
from stages.runner import params as P
from stages.runner.paths import CLASSIFIER_METRICS, EXPLAINABILITY_METRICS, SEGMENTATION_METRICS, SEGMENTER_METRICS, TIMINGS
from stages.timings import stage_timings

# Summary rows that are headline figures, by the band label they are judged against.
BAND_OF = {figure.label: figure for figure in bands.HEADLINE}


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fmt(value: Any, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.2f}{suffix}" if isinstance(value, (int, float)) else str(value)


def rows(raw_params: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(group, figure, value, band label or '', file) for every number the summary shows; absent files give '–'."""
    classifier = _read(CLASSIFIER_METRICS)
    pseudo = _read(SEGMENTATION_METRICS)
    segmenter = _read(SEGMENTER_METRICS)
    explain = _read(EXPLAINABILITY_METRICS)
    method = raw_params.get("cams", {}).get("method", "")
    background = raw_params.get("evaluate", {}).get("seed_background")
    aucs = explain.get(method, {})
    val_map = classifier.get("val_map")
    seeds, best, crf, walk, gain, seg, seg_crf = map(bands.label, ("seed_miou", "seed_miou_best_background", "crf_confident_miou",
                                                                    "random_walk_miou", "random_walk_gain", "miou", "crf.miou"))
    pseudo_group, segmenter_group = f"pseudo-masks ({pseudo.get('split', '?')})", f"segmenter ({segmenter.get('split', '?')})"
    # Without ground truth the evaluation stages write a note instead of scores: show it.
    pseudo_rows = [(pseudo_group, pseudo["note"], "–", "", str(SEGMENTATION_METRICS))] if "note" in pseudo else [
        (pseudo_group, f"seeds mIoU (background {_fmt(background)})", _fmt(pseudo.get("seed_miou")), seeds, str(SEGMENTATION_METRICS)),
        ("", f"seeds mIoU at best background ({_fmt(pseudo.get('seed_best_background'))})", _fmt(pseudo.get("seed_miou_best_background")), best, ""),
        ("", f"CRF confident mIoU ({_fmt(pseudo.get('crf_coverage'), '%')} of pixels)", _fmt(pseudo.get("crf_confident_miou")), crf, ""),
        ("", "random walk mIoU", _fmt(pseudo.get("random_walk_miou")), walk, ""),
        ("", "random walk gain over best-background seeds", _fmt(pseudo.get("random_walk_gain")), gain, ""),
    ]
    segmenter_rows = [(segmenter_group, segmenter["note"], "–", "", str(SEGMENTER_METRICS))] if "note" in segmenter else [
        (segmenter_group, "mIoU", _fmt(segmenter.get("miou")), seg, str(SEGMENTER_METRICS)),
        ("", "mIoU with dense CRF", _fmt(segmenter.get("crf", {}).get("miou")), seg_crf, ""),
    ]
    out = [
        ("classifier", "val mAP (%)", _fmt(val_map * 100 if val_map is not None else None), bands.label("val_map"), str(CLASSIFIER_METRICS)),
        *pseudo_rows,
        *segmenter_rows,
        (f"explanations ({method or '?'})", "perturbation AUC: positive ↓ / negative ↑",
         f"{_fmt(aucs.get('positive_auc_predicted'))} / {_fmt(aucs.get('negative_auc_predicted'))}", "", str(EXPLAINABILITY_METRICS)),
        ("", explain.get("segmentation_test", "segmentation test mIoU"), _fmt(aucs.get("seg_miou")), "", ""),
    ]
    timings = stage_timings(TIMINGS)
    for i, timing in enumerate(timings):
        # CPU time, peak memory and throughput where recorded (older timings files have fewer fields).
        extra = f" ({timing['cpu_seconds']:.0f} s CPU, {timing['peak_memory_mib']:.0f} MiB" if "cpu_seconds" in timing else ""
        if extra and "items_per_second" in timing:
            extra += f", {timing['items_per_second']:.1f} {timing['items'][1]}/s"
        if timing.get("processes", 1) > 1:
            extra += f", {timing['processes']} processes"
        extra += ")" if extra else ""
        out.append(("stage wall time (s)" if i == 0 else "", timing["stage"] + extra, f"{timing['seconds']:.0f}", "", f"{TIMINGS}/" if i == 0 else ""))
    if timings:
        out.append(("", f"all {len(timings)} stages", f"{sum(t['seconds'] for t in timings):.0f}", "", ""))
    return out


def run_numerics() -> dict[str, str] | None:
    """The torch version, CPU kernels and threads the last run's stages recorded (None if none did)."""
    return next((timing["numerics"] for timing in stage_timings(TIMINGS) if "numerics" in timing), None)


def differences(expected: dict[str, Any], raw_params: dict[str, Any], numerics: dict[str, str] | None) -> tuple[list[str], list[str]]:
    """(params keys that differ, everything else that differs) between this run and the band's runs."""
    current = bands.fingerprint_of(raw_params)
    made = expected["made"]
    params = bands.params_differences(expected["fingerprint"]["params"], current["params"])
    other = [f"code of {stage}" for stage, digest in current["code"].items() if expected["fingerprint"]["code"].get(stage) != digest]
    if numerics is None:
        other.append("torch, CPU kernels and threads unknown (no stage timing records them)")
    else:
        other += [f"{what} {numerics[key]} (band: {made['numerics'][key]})" for what, key in
                  (("torch", "torch"), ("CPU kernels", "cpu_kernels"), ("ATen kernel path", "aten_cpu_capability"), ("threads", "threads"))
                  if numerics.get(key) != made["numerics"].get(key)]
    return params, other


def _listed(items: list[str], separator: str, most: int = 4) -> str:
    """The first ``most`` items, then how many more: a line a person reads."""
    return separator.join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def band_lines(expected: dict[str, Any] | None, raw_params: dict[str, Any], numerics: dict[str, str] | None) -> tuple[list[str], bool]:
    """The lines above the table, and whether the bands apply to this run's params."""
    if expected is None:
        return [f"no expected bands ({bands.EXPECTED} is missing)"], False
    made = expected["made"]
    lines = [f"bands: {bands.EXPECTED}, {len(made['runs'])} training seeds at commit {made['commit'][:10]} on {made['machine']}"]
    params, other = differences(expected, raw_params, numerics)
    if params:
        lines.append(f"no band for these params: they differ from the band's in {_listed(params, ', ')}")
    lines.append("differs from the band's runs in: " + _listed(other, "; ") if other else "same code, params, torch, CPU kernels and threads as the band's runs")
    return lines, not params


def main(params_file: Path = typer.Option(Path("params.yaml"), "--params", help="Params file (cams.method, evaluate.seed_background).")) -> None:
    """Print the classifier, pseudo-mask, segmenter and explanation figures beside their expected bands, stage times, and their files."""
    try:
        raw = P.load(params_file)
    except P.ParamsError:
        raw = {}
    expected = bands.load_expected()
    header, banded = band_lines(expected, raw, run_numerics())
    outside = []
    table = []
    for group, figure, value, label, source in rows(raw):
        cell = ""
        if label and banded and label in expected["figures"]:
            band = expected["figures"][label]
            judged = bands.verdict(BAND_OF[label].read(), band)
            cell = f"{band['mean']:.1f} ± {band['std']:.1f}  {judged}"
            if judged not in ("ok", ""):
                low, high = bands.limits(band)
                outside.append(f"{label} {BAND_OF[label].read():.2f} (healthy {low:.1f}–{high:.1f})")
        table.append((group, figure, value, cell, source))
    for line in header:
        typer.echo(line)
    widths = [max(len(row[i]) for row in table + [("", "figure", "value", "expected", "")]) for i in range(4)]
    typer.echo(f"{'':<{widths[0]}}  {'figure':<{widths[1]}}  {'value':>{widths[2]}}  {'expected':<{widths[3]}}  file")
    for row in table:
        typer.echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:<{widths[3]}}  {row[4]}".rstrip())
    if banded:
        typer.echo("health: " + ("OUTSIDE the expected band: " + "; ".join(outside) if outside else "every headline figure is inside its expected band"))
    typer.echo("(all metrics: dvc metrics show; curves: dvc plots show; pictures: report/index.html)")
