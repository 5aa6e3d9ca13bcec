"""Perturbation and segmentation tests of explanations: hand-computed cases and batching invariance."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from pipeline.evaluation.explanations import evaluate_method
from pipeline.evaluation.localisation import SegmentationAccumulator, class_masks, image_average_precision
from pipeline.evaluation.perturbation import (
    PerturbationAccumulator,
    explained_rows,
    is_correct,
    perturb,
    perturbation_test,
    pixels_removed,
    prepare_maps,
    removal_ranks,
)

# A 2×5 map (10 pixels, so with 10 steps step k removes k pixels). Raster indices:
#   0:.5  1:.9  2:.1  3:.9  4:.3
#   5:.0  6:.7  7:.2  8:.6  9:.4
MAP = torch.tensor([[[0.5, 0.9, 0.1, 0.9, 0.3], [0.0, 0.7, 0.2, 0.6, 0.4]]])
POSITIVE_ORDER = [1, 3, 6, 8, 0, 9, 4, 7, 2, 5]  # most relevant first; the .9 tie by raster order
NEGATIVE_ORDER = [5, 2, 7, 4, 9, 0, 8, 6, 1, 3]  # least relevant first; the .9 tie by raster order


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


@pytest.mark.parametrize("sign, order", [("positive", POSITIVE_ORDER), ("negative", NEGATIVE_ORDER)])
def test_removal_order_zeroes_the_expected_pixels_at_every_step(sign, order):
    images = torch.ones(1, 3, 2, 5)
    ranks = removal_ranks(MAP, sign)
    for k, count in enumerate(pixels_removed(10, num_steps=10)):
        assert count == k
        zeroed = (perturb(images, ranks, count) == 0).reshape(3, 10)
        assert zeroed.all(dim=0).eq(zeroed.any(dim=0)).all()  # all channels of a pixel together
        assert sorted(torch.nonzero(zeroed[0])[:, 0].tolist()) == sorted(order[:k])


def test_pixels_removed_matches_the_reference_counts_for_224():
    assert pixels_removed(224 * 224) == [0, 5017, 10035, 15052, 20070, 25088, 30105, 35123, 40140, 45158]


def test_perturbation_test_end_to_end_on_a_hand_made_model():
    # Class 1 wins while raster pixel 6 is present: it is removed 3rd in the positive order and
    # 8th in the negative one, so the prediction is right until step 3 / step 8 respectively.
    def model(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.full((len(x),), 0.5), x[:, 0].reshape(len(x), -1)[:, 6]], dim=1)

    correct = perturbation_test(model, torch.ones(1, 3, 2, 5), MAP, torch.tensor([1]), torch.tensor([1]), identity, max_batch=4)
    assert correct["positive"][:, 0].tolist() == [True] * 3 + [False] * 7
    assert correct["negative"][:, 0].tolist() == [True] * 8 + [False] * 2
    accumulator = PerturbationAccumulator()
    accumulator.update(correct)
    assert accumulator.auc("positive") == pytest.approx(25.0)  # 100 · 0.05 · (2·3 − 1 − 0)
    assert accumulator.auc("negative") == pytest.approx(75.0)  # 100 · 0.05 · (2·8 − 1 − 0)


def test_auc_on_a_known_curve_accumulated_over_batches():
    # 4 rows; correct counts per step 4, 3, 2, 2, 1, 1, 0, 0, 0, 0 → accuracy 1, .75, .5, .5, .25, .25, 0 …
    counts = [4, 3, 2, 2, 1, 1, 0, 0, 0, 0]
    table = np.array([[row < c for row in range(4)] for c in counts])
    accumulator = PerturbationAccumulator()
    accumulator.update({"positive": table[:, :1], "negative": ~table[:, :1]})
    accumulator.update({"positive": table[:, 1:], "negative": ~table[:, 1:]})
    assert accumulator.count == 4
    np.testing.assert_allclose(accumulator.accuracy("positive"), np.array(counts) / 4)
    # trapezoids of width .1: .05 · (2 · Σy − y0 − y9) = .05 · (6.5 − 1) = .275
    assert accumulator.auc("positive") == pytest.approx(27.5)
    assert accumulator.auc("negative") == pytest.approx(90.0 - 27.5)
    summary = accumulator.summary()
    assert summary["positive"]["accuracy"][:3] == pytest.approx([100.0, 75.0, 50.0])
    assert summary["fractions"] == pytest.approx([k / 10 for k in range(10)])


def test_single_label_rule_is_top1_against_the_label():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 0.0]])
    assert is_correct(logits, torch.tensor([2, 0]), torch.tensor([1, 2]), "single_label").tolist() == [True, False]


def test_multi_label_rule_needs_a_positive_logit_for_a_present_class():
    logits = torch.tensor([[0.5, -1.0, 2.0], [-0.1, 0.0, 3.0], [0.1, 0.0, 3.0]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 1], [0, 1, 1]])
    # row 0: class 0 present, logit .5 → right; row 1: logit exactly 0 → wrong;
    # row 2: class 0 has a positive logit but is absent → wrong.
    assert is_correct(logits, torch.tensor([0, 1, 0]), labels, "multi_label").tolist() == [True, False, False]


def test_explained_rows():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    multi_hot = torch.tensor([[1, 0, 1], [0, 1, 0]])
    rows, ids = explained_rows(logits, None, "predicted", "multi_label")
    assert rows.tolist() == [0, 1] and ids.tolist() == [1, 0]
    rows, ids = explained_rows(logits, multi_hot, "target", "multi_label")
    assert rows.tolist() == [0, 0, 1] and ids.tolist() == [0, 2, 1]
    rows, ids = explained_rows(logits, torch.tensor([2, 2]), "target", "single_label")
    assert rows.tolist() == [0, 1] and ids.tolist() == [2, 2]


# Segmentation: dyadic values keep float32 and 1 − map exact.
SEG_MAP_A = torch.tensor([[0.0, 0.25, 1.0], [0.75, 0.5, 0.875]])  # mean .5625 → fg [[0,0,1],[1,0,1]]
SEG_MASK_A = np.array([[0, 1, 1], [0, 0, 1]], dtype=np.uint8)
SEG_MAP_B = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0]])  # mean .4167 → fg [[1,0,0],[1,1,0]]
SEG_MASK_B = np.array([[1, 0, 255], [1, 1, 0]], dtype=np.uint8)


def test_image_average_precision_by_hand():
    # fg AP: ranks 1(fg) .875(fg) .75 .5 .25(fg) 0 → (1 + 1 + 3/5) / 3
    # bg AP on 1 − map: 1(bg) .75 .5(bg) .25(bg) .125 0 → (1 + 2/3 + 3/4) / 3
    assert image_average_precision(SEG_MAP_A.numpy(), SEG_MASK_A, "mean_of_classes") == pytest.approx((13 / 15 + 29 / 36) / 2)
    # pooled, 12 candidates, 6 positive; groups by score: 1 (2 pos), .875 (pos), .75 (2 neg),
    # .5 (1 pos of 2), .25 (2 pos), .125, 0 → (2·1 + 1·1 + 1·4/7 + 2·6/9) / 6
    assert image_average_precision(SEG_MAP_A.numpy(), SEG_MASK_A, "pooled") == pytest.approx(103 / 126)
    # ignored pixel dropped; pooled groups: 1 (4 pos), .5 (1 pos, 1 neg) → (4·1 + 1·5/6) / 5
    assert image_average_precision(SEG_MAP_B.numpy(), SEG_MASK_B, "pooled") == pytest.approx(29 / 30)
    assert image_average_precision(SEG_MAP_B.numpy(), SEG_MASK_B, "mean_of_classes") == pytest.approx(1.0)


def test_segmentation_accumulator_sums_confusions_over_images():
    accumulator = SegmentationAccumulator()
    accumulator.update(SEG_MAP_A[None], SEG_MASK_A[None])
    assert accumulator.pixel_accuracy == pytest.approx(4 / 6)
    np.testing.assert_allclose(accumulator.iou, [0.5, 0.5])  # 2 / (2 + 1 + 1) each
    accumulator.update(SEG_MAP_B[None], torch.from_numpy(SEG_MASK_B[None]))
    np.testing.assert_array_equal(accumulator.confusion, [[4, 1], [1, 5]])
    assert accumulator.pixel_accuracy == pytest.approx(9 / 11)
    np.testing.assert_allclose(accumulator.iou, [4 / 6, 5 / 7])
    assert accumulator.miou == pytest.approx((4 / 6 + 5 / 7) / 2)
    assert accumulator.mean_ap == pytest.approx((103 / 126 + 29 / 30) / 2)
    summary = accumulator.summary()
    assert summary["count"] == 2 and summary["pixel_accuracy"] == pytest.approx(100 * 9 / 11)


def test_prepare_maps_upsamples_and_min_maxes():
    scores = prepare_maps(torch.tensor([[[1.0, 3.0], [3.0, 5.0]]]), (4, 4))
    assert scores.shape == (1, 4, 4)
    assert scores.min().item() == 0.0 and scores.max().item() == 1.0
    full = prepare_maps(torch.tensor([[[2.0, 4.0], [6.0, 10.0]]]), (2, 2))  # already input-sized
    torch.testing.assert_close(full, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))


def test_class_masks_take_the_union_of_the_class_objects():
    masks = torch.tensor([[[0, 2, 255], [1, 2, 0]], [[0, 2, 255], [1, 2, 0]]], dtype=torch.uint8)
    binary = class_masks(masks, torch.tensor([1, 0]), offset=1)
    assert binary.tolist() == [[[0, 1, 255], [0, 1, 0]], [[0, 0, 255], [1, 0, 0]]]


# --- the driver on a tiny real model -----------------------------------------------------------


def tiny_vit(num_classes: int = 4, depth: int = 1) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=depth, num_heads=2, num_classes=num_classes).eval()


def pooled_explainer(images: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """A per-image stand-in on the 4×4 token grid that depends on the explained class."""
    channel = images[torch.arange(len(images)), class_ids % 3]
    return F.avg_pool2d(channel[:, None], 4)[:, 0]


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.5


def make_batches(images, batch_size, **extra):
    return [{"images": images[i:i + batch_size], **{k: v[i:i + batch_size] for k, v in extra.items()}} for i in range(0, len(images), batch_size)]


def record_logits(model: torch.nn.Module) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    """Every logit row the model produces, to check the margins of the decisions behind an exact ``==``."""
    logits: list[torch.Tensor] = []
    return logits, model.register_forward_hook(lambda _module, _args, out: logits.append(out.detach()))


# Exact == of two runs' summaries is sound: they are counts of decisions (argmax / logit > 0 / score > map mean)
# and float64 sums of per-image APs in the same order. The maps here are per-image elementwise, but the float32
# logits of batches of 6, 7 and 1 round differently (other BLAS kernels: ~1e-7 of the logit scale), so each test
# checks that its logit decisions clear 1e-3 of that scale; foreground thresholds clear the mean by ≥ 1.7e-4.
DECISION_MARGIN = 1e-3


def test_single_label_batched_equals_one_image_at_a_time():
    model = tiny_vit()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(6, 3, 16, 16, generator=generator)
    labels = model(normalise(images)).argmax(1)  # some rows right at step 0
    labels[::2] = (labels[::2] + 1) % 4  # and some wrong
    masks = (torch.rand(6, 16, 16, generator=generator) > 0.5).to(torch.uint8)
    seen = []
    logits, hook = record_logits(model)
    batched = evaluate_method(model, make_batches(images, 6, labels=labels, masks=masks), normalise, pooled_explainer, max_batch=7, progress=seen.append)
    single = evaluate_method(model, make_batches(images, 1, labels=labels, masks=masks), normalise, pooled_explainer, max_batch=1)
    hook.remove()
    top2 = torch.cat(logits).topk(2, dim=1).values  # single-label decisions are argmaxes
    assert (top2[:, 0] - top2[:, 1]).min() > DECISION_MARGIN * top2.abs().max()
    assert seen == [6]
    assert batched == single
    assert batched["perturbation"]["predicted"]["count"] == 6
    assert batched["perturbation"]["target"]["positive"]["accuracy"][0] == pytest.approx(50.0)
    assert batched["segmentation"]["count"] == 6
    json.dumps(batched, allow_nan=False)


def test_multi_label_rows_masks_and_chunked_explainer():
    model = tiny_vit(num_classes=3)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([[1, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]])
    masks = torch.zeros(4, 16, 16, dtype=torch.uint8)
    masks[:, :8] = 1  # class 0 on top, class 2 at the bottom left (VOC labels: class + 1)
    masks[:, 8:, :8] = 3
    masks[:, 8:, 8:] = 255
    calls = []

    def explainer(x, ids):
        calls.append(len(x))
        return pooled_explainer(x, ids)

    with torch.no_grad():  # "predicted" rows are argmaxes of the clean logits
        top2 = model(normalise(images)).topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1]).min() > DECISION_MARGIN * top2.abs().max()
    logits, hook = record_logits(model)
    result = evaluate_method(
        model, make_batches(images, 2, labels=labels, masks=masks), normalise, explainer,
        rule="multi_label", segmentation_mode="target", max_batch=5)
    assert result["perturbation"]["target"]["count"] == 6  # (image, present class) pairs
    assert result["perturbation"]["predicted"]["count"] == 4
    assert result["segmentation"]["count"] == 6 and result["segmentation"]["mode"] == "target"
    assert max(calls) <= 2  # never more rows per explainer call than images per batch
    rerun = evaluate_method(
        model, make_batches(images, 1, labels=labels, masks=masks), normalise, pooled_explainer,
        rule="multi_label", segmentation_mode="target", max_batch=1)
    hook.remove()
    logits = torch.cat(logits)  # multi-label decisions are signs of logits
    assert logits.abs().min() > DECISION_MARGIN * logits.abs().max()
    assert rerun == result
    json.dumps(result, allow_nan=False)


def test_missing_batch_keys_are_named():
    model = tiny_vit()
    with pytest.raises(ValueError, match="'labels'"):
        evaluate_method(model, [{"images": torch.rand(1, 3, 16, 16)}], normalise, pooled_explainer, segmentation_mode=None)
    with pytest.raises(ValueError, match="'masks'"):
        evaluate_method(model, [{"images": torch.rand(1, 3, 16, 16)}], normalise, pooled_explainer, perturbation_modes=())


@pytest.mark.parametrize("method", ["transformer_attribution", "lrp"])
def test_runs_with_the_real_explain_api(method):
    from pipeline.explain import explain

    model = tiny_vit(depth=2)  # the default start layer 1 needs two blocks
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2])
    masks = torch.ones(3, 16, 16, dtype=torch.uint8)
    explainer = functools.partial(explain, model, method=method)
    result = evaluate_method(model, make_batches(images, 3, labels=labels, masks=masks), normalise, explainer)
    assert result["perturbation"]["target"]["count"] == 3 and result["segmentation"]["count"] == 3
    json.dumps(result, allow_nan=False)
