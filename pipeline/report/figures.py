"""Pictures for people: colour maps, label colouring, overlays, PNG/SVG snippets for the report."""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pipeline.data.label_maps import palette

# Anchor colours of a perceptually ordered map (dark blue -> teal -> yellow), interpolated.
_ANCHORS = np.array([[48, 18, 59], [40, 100, 200], [30, 170, 160], [120, 210, 80], [250, 230, 40], [180, 20, 20]], dtype=np.float64)


def heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] to (H, W, 3) uint8 colours."""
    v = np.clip(np.nan_to_num(values.astype(np.float64)), 0, 1) * (len(_ANCHORS) - 1)
    low = np.floor(v).astype(int).clip(0, len(_ANCHORS) - 2)
    t = (v - low)[..., None]
    return ((1 - t) * _ANCHORS[low] + t * _ANCHORS[low + 1]).astype(np.uint8)


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """Label map (0 bg, k class, 255 neutral/ignore) in the VOC palette."""
    return palette()[labels]


def overlay(image: np.ndarray, colours: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Blend a colour picture over an RGB image of the same size."""
    return (image.astype(np.float64) * (1 - opacity) + colours.astype(np.float64) * opacity).astype(np.uint8)


def resize_nearest(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(picture).resize((size[1], size[0]), Image.NEAREST))


def resize_smooth(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(picture).resize((size[1], size[0]), Image.BILINEAR))


def png_data_uri(picture: np.ndarray) -> str:
    """A PNG embedded as a data URI, so the report is one self-contained file."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def seed_overlay(image: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The image under the per-pixel max of its present classes' seed maps (each in [0, 1])."""
    strongest = seeds.max(axis=0) if len(seeds) else np.zeros(image.shape[:2])
    return overlay(image, heatmap(strongest), 0.55)


def line_chart_svg(x: Sequence[float], series: dict[str, Sequence[float]], title: str, width: int = 360, height: int = 220) -> str:
    """A small inline SVG line chart (no plotting dependency); None values are skipped."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    values = [v for ys in series.values() for v in ys if v is not None]
    if not values or len(x) < 2:
        return f"<p>{html.escape(title)}: no data</p>"
    low, high = min(values), max(values)
    high = high if high > low else low + 1
    left, right, top, bottom = 44, 10, 24, 28
    def sx(v: float) -> float:
        return left + (v - x[0]) / ((x[-1] - x[0]) or 1) * (width - left - right)
    def sy(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="12">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{high:.3g}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" font-size="10">{low:.3g}</text>',
             f'<text x="{left}" y="{height - 8}" font-size="10">{x[0]:g}</text>',
             f'<text x="{width - right}" y="{height - 8}" text-anchor="end" font-size="10">{x[-1]:g}</text>']
    for k, (name, ys) in enumerate(series.items()):
        points = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, ys) if b is not None)
        colour = colours[k % len(colours)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{points}"/>')
        parts.append(f'<text x="{width - right}" y="{top + 12 + 12 * k}" text-anchor="end" font-size="10" fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
