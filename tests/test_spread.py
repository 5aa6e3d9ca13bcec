"""benchmarks/spread.py's reading of a random walk's masks: background IoU, and how much of what
the masks call an object is one (precision) and how much of each object they find (recall)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.metrics import confusion_matrix

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spread():
    spec = importlib.util.spec_from_file_location("spread", ROOT / "benchmarks" / "spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_mask_spilling_onto_the_background_loses_precision_not_recall(spread) -> None:
    # One row of 10 pixels: background 0-5, class 1 at 6-8, class 2 at 9.
    target = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    # Class 1 spills over two background pixels and finds two of its three; class 2 is called 1.
    prediction = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    background_iou, precision, recall = spread._foreground_balance(confusion_matrix(prediction, target, 3))
    # Background: 4 right, 2 lost to class 1, 1 object pixel taken: 4 / (4 + 2 + 1).
    assert background_iou == pytest.approx(100 * 4 / 7)
    # Five pixels called an object, two of them that object; four object pixels, two found.
    assert precision == pytest.approx(100 * 2 / 5)
    assert recall == pytest.approx(100 * 2 / 4)
