"""Metric definitions on cases small enough to compute by hand."""
import math

import numpy as np
import pytest

from pipeline.core.metrics import average_precision, confusion_matrix, iou_per_class, mean_average_precision, mean_iou, trapezoid_auc
from pipeline.evaluation.pseudo_labels import EvaluateConfig, PseudoLabelEvaluation, SegmentationScore, seed_labels
from pipeline.seeds.stored import upsample_seeds


def test_average_precision_by_hand():
    # Ranking: +, -, +, -  -> precision at the positives 1/1 and 2/3.
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    # Tied scores count as one threshold: the tie of a positive and a negative gives precision 1/2.
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert math.isnan(average_precision([0.1, 0.2], [0, 0]))


def test_mean_average_precision_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1], [0.2, 0.3]])
    labels = np.array([[1, 0], [0, 0]])
    value, per_class = mean_average_precision(scores, labels)
    assert value == pytest.approx(1.0)
    assert math.isnan(per_class[1])


def test_trapezoid_auc_by_hand():
    x = np.arange(10) / 10
    assert trapezoid_auc(np.ones(10), x) == pytest.approx(0.9)
    assert trapezoid_auc(1 - x, x) == pytest.approx(0.9 - 0.81 / 2)


def test_confusion_and_iou_by_hand():
    target = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 255, 0]])
    confusion = confusion_matrix(pred, target, 2)
    # rows: target 0 (2 px), target 1 (3 px); columns: pred 0, pred 1, unlabelled
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 1]]
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 2, FP 1, FN 1 -> 2/4
    assert iou_per_class(confusion) == pytest.approx([0.5, 0.5])
    assert mean_iou(confusion) == pytest.approx(0.5)


def test_segmentation_score_coverage_and_precision():
    score = SegmentationScore(2)
    score.add(np.array([0, 1, 255, 255]), np.array([0, 1, 1, 0]))
    assert score.coverage() == pytest.approx(0.5)
    assert score.pixel_precision() == pytest.approx(1.0)
    assert np.nanmean(score.confident_iou()) == pytest.approx(1.0)


def test_seed_labels_take_the_argmax_against_a_constant_background():
    maps = np.array([[[0.9, 0.1], [0.3, 0.0]]], dtype=np.float32)
    labels = seed_labels(upsample_seeds(maps, (2, 2)), np.array([3]), background=0.2)
    assert labels.tolist() == [[3, 0], [3, 0]]
    assert seed_labels(np.zeros((0, 2, 2), np.float32), np.zeros(0, int), 0.2).tolist() == [[0, 0], [0, 0]]


def test_walk_gain_is_measured_against_the_seeds_at_their_best_background():
    # The object's seeds (0.3) lose to the configured background score 0.5 but win at 0.25 and
    # below, where they are exact; a walk as exact gains nothing over them.
    target = np.zeros((4, 4), np.uint8)
    target[:, :2] = 1
    seeds = np.where(target == 1, 0.3, 0.1).astype(np.float32)[None]
    evaluation = PseudoLabelEvaluation(2, EvaluateConfig(split="train", seed_background=0.5))
    evaluation.add(target, seeds, np.array([1]), crf_labels=target, walk_labels=target)
    metrics = evaluation.metrics()
    assert metrics["seed_miou"] == 25.0 and metrics["seed_miou_best_background"] == 100.0
    assert metrics["random_walk_miou"] == 100.0
    assert metrics["random_walk_gain"] == 0.0
