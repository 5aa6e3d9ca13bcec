"""Evaluating explanation methods: the perturbation and segmentation tests (Chefer et al.,
CVPR 2021; docs/methods.md, "Evaluating explanations").

An explainer is any callable ``(images_normalised (R, 3, H, W), class_ids (R,)) -> maps``
returning raw relevance on the token grid (R, gh, gw) or at input resolution (R, H, W), e.g.
``functools.partial(explain, model, method="rollout")``. Maps are upsampled (bilinear) and
min-max normalised to [0, 1] before either test (:func:`prepare_maps`).

Explained class ("mode"), one row per explained (image, class) pair:

- ``"predicted"``: the class with the highest logit on the clean image (for multi-label this is
  also the highest sigmoid score), one row per image.
- ``"target"``: the ground truth. Single-label: the label, one row per image. Multi-label: one
  row per (image, present class) pair, image-major, classes ascending.

Correctness rule of a row at a perturbation step:

- ``"single_label"`` (ImageNet, the reference): top-1 argmax of the logits equals the
  ground-truth label, whatever class was explained.
- ``"multi_label"``: the explained class c is a ground-truth class of the image and is still
  predicted positive, logit_c > 0 (sigmoid > 0.5; a logit of exactly 0 is not positive). For
  ``"target"`` rows the first condition always holds; for ``"predicted"`` rows it makes a wrong
  top prediction count as an error, as a wrong top-1 does in the single-label rule.

Batches fed to :func:`evaluate_method` are mappings of tensors:

- ``"images"``: (B, 3, H, W) float, unnormalised, in [0, 1];
- ``"labels"``: (B,) long class indices (single-label) or (B, C) multi-hot (multi-label);
  needed by the perturbation test and by the "target" mode;
- ``"masks"``: (B, H, W) integers, needed by the segmentation test. Single-label: 0 background,
  1 foreground. Multi-label: a class-index map (VOC style); the foreground of explained class c
  is the union of its objects, ``mask == c + mask_class_offset``. 255 is ignored in both.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import torch

from pipeline.core.config import knob
from pipeline.core.distributed import Group
from pipeline.evaluation.localisation import ApRule, SegmentationAccumulator, class_masks
from pipeline.evaluation.perturbation import (
    MODES,
    RULES,
    Explainer,
    Mode,
    Normalise,
    PerturbationAccumulator,
    Rule,
    check_choice,
    explained_rows,
    forward_logits,
    perturbation_test,
    prepare_maps,
)
from pipeline.explain import method_names


@dataclass(frozen=True)
class ImageNetEvalConfig:
    """``explain_eval.imagenet``: a timm ImageNet model on ILSVRC2012 val and gtsegs_ijcv.mat, as the paper."""

    model: str = knob("timm ViT name, e.g. vit_base_patch16_224")
    pretrained: Union[bool, str] = knob("true (timm hub, needs internet) or a local checkpoint path")
    image_size: int = knob("input side, px", 16, 2048)
    val_root: Optional[str] = knob("ILSVRC2012 val: class folders, or flat files with labels_file (null: skip)")
    labels_file: Optional[str] = knob('"<file name> <class index>" per line, for a flat val_root')
    segmentation_file: Optional[str] = knob("gtsegs_ijcv.mat for the segmentation test (null: skip)")


@dataclass(frozen=True)
class ExplainEvalConfig:
    """The ``explain_eval`` section: which methods, on which images, in batches of what size."""

    source: Literal["dataset", "imagenet"] = knob("dataset: the classifier on dataset.root (multi-label rule); imagenet: see imagenet")
    methods: list[str] = knob("registered explanation methods to evaluate", choices=method_names)
    split: str = knob("split of dataset.root evaluated (source: dataset)")
    max_images: int = knob("at most this many images (0: all)", 0)
    batch_size: int = knob("images explained per batch", 1)
    max_forward_batch: int = knob("perturbed images per forward pass", 1)
    start_layer: int = knob("first block of the chain, for the methods that chain blocks", 0)
    imagenet: ImageNetEvalConfig = knob("the ImageNet source's model and files")


def evaluate_method(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    normalise: Normalise,
    explainer: Explainer,
    *,
    rule: Rule = "single_label",
    perturbation_modes: Sequence[Mode] = ("predicted", "target"),
    segmentation_mode: Mode | None = "predicted",
    num_steps: int = 10,
    max_batch: int = 64,
    mask_class_offset: int = 1,
    ap_rule: ApRule = "pooled",
    progress: Callable[[int], object] | None = None,
    group: Group = Group(),
) -> dict[str, Any]:
    """Run the perturbation tests (one per mode in `perturbation_modes`) and the segmentation test
    (explaining `segmentation_mode`; None skips it) over `batches` (format in the module docstring).

    The model (in eval mode) is run once per batch on the clean images; maps of a mode are
    computed once and shared by both tests. The explainer sees at most as many rows per call as
    the incoming batch has images (multi-label "target" rows are split into such chunks).
    `progress` is called with the number of images after each batch. With several ranks, each
    passes its own batches and the counts of all ranks are added up before the summary.

    Returns a JSON-ready dict: {"rule", "perturbation": {mode: PerturbationAccumulator.summary()},
    "segmentation": SegmentationAccumulator.summary() | {"mode"}}; sections that did not run are
    absent. Accuracies, AUCs and segmentation metrics are in percent.
    """
    check_choice("rule", rule, RULES)
    for mode in perturbation_modes:
        check_choice("perturbation mode", mode, MODES)
    if segmentation_mode is not None:
        check_choice("segmentation_mode", segmentation_mode, MODES)
    perturbation = {mode: PerturbationAccumulator(num_steps) for mode in perturbation_modes}
    segmentation = SegmentationAccumulator(ap_rule) if segmentation_mode is not None else None
    modes = list(dict.fromkeys(perturbation_modes))
    if segmentation_mode is not None and segmentation_mode not in modes:
        modes.append(segmentation_mode)

    for batch in batches:
        _evaluate_batch(model, batch, normalise, explainer, modes, perturbation, segmentation, segmentation_mode,
                        rule=rule, num_steps=num_steps, max_batch=max_batch, mask_class_offset=mask_class_offset)
        if progress is not None:
            progress(len(batch["images"]))

    # Every rank's counts on every rank (all_gather), added in rank order: ranks 1.. into rank 0's.
    for other_perturbation, other_segmentation in group.gather((perturbation, segmentation))[1:]:
        for mode, accumulator in other_perturbation.items():
            perturbation[mode].merge(accumulator)
        if segmentation is not None:
            segmentation.merge(other_segmentation)
    result: dict[str, Any] = {"rule": rule}
    if perturbation:
        result["perturbation"] = {mode: acc.summary() for mode, acc in perturbation.items()}
    if segmentation is not None:
        result["segmentation"] = {"mode": segmentation_mode, **segmentation.summary()}
    return result


def _evaluate_batch(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], normalise: Normalise, explainer: Explainer,
                    modes: Sequence[Mode], perturbation: dict[str, PerturbationAccumulator], segmentation: SegmentationAccumulator | None,
                    segmentation_mode: Mode | None, *, rule: Rule, num_steps: int, max_batch: int, mask_class_offset: int) -> None:
    """One batch of :func:`evaluate_method`: explain each mode's rows once, feed both tests."""
    device = next(model.parameters()).device
    images = batch["images"].to(device).float()
    labels = batch["labels"].to(device) if "labels" in batch else None
    masks = batch["masks"].to(device) if "masks" in batch else None
    if perturbation and labels is None:
        raise ValueError("the perturbation test needs ground-truth labels in every batch ('labels')")
    if segmentation is not None and masks is None:
        raise ValueError("the segmentation test needs masks in every batch ('masks')")
    size = tuple(images.shape[-2:])
    clean_logits = forward_logits(model, normalise, images, max_batch)
    for mode in modes:
        rows, class_ids = explained_rows(clean_logits, labels, mode, rule)
        if rows.numel() == 0:  # multi-label "target" batch without any present class
            continue
        chunks = zip(rows.split(len(images)), class_ids.split(len(images)))
        raw = torch.cat([explainer(normalise(images[part]), ids).detach() for part, ids in chunks])
        scores = prepare_maps(raw.to(device), size)
        if mode in perturbation:
            perturbation[mode].update(perturbation_test(
                model, images[rows], scores, class_ids, labels[rows], normalise,
                rule=rule, num_steps=num_steps, max_batch=max_batch, clean_logits=clean_logits[rows]))
        if segmentation is not None and mode == segmentation_mode:
            row_masks = masks[rows] if rule == "single_label" else class_masks(masks[rows], class_ids, mask_class_offset)
            segmentation.update(scores, row_masks)
