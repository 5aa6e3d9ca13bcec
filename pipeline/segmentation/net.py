"""The segmentation network: a backbone's feature maps, an ASPP head and a light decoder
(DeepLab v3+: Chen et al., ECCV 2018; docs/methods.md, "Segmentation network").

Backbones come from a small registry (`register_backbone`), each returning a list of feature
maps ordered fine to coarse and their channel counts. The head takes the coarsest map
through ASPP and, when the backbone also gives a finer map, fuses it as v3+ does. Backbone
modules are used as they are: features are read with a forward hook, never by editing them.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import timm
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.classifier.model import DemoHybridConfig, ModelError, build_classifier, is_hybrid, load_classifier, load_local_weights
from pipeline.core.config import from_mapping, knob
from pipeline.core.errors import InputError


@dataclass(frozen=True)
class SegmenterConfig:
    """Architecture of the segmentation network (part of the ``train_seg`` section)."""

    backbone: str = knob("classifier (the trained ViT of train_cls) or a timm CNN name with features_only, e.g. resnet50")
    weights: Union[bool, str] = knob("backbone initialisation: false (random), classifier (train_cls's weights) or a local checkpoint path")
    aspp_rates: list[int] = knob("dilation rates of ASPP's 3x3 branches, in cells of the coarsest feature map", 1, 64)
    aspp_channels: int = knob("width of each ASPP branch and of the decoder", 8, 1024)
    low_level_channels: int = knob("the finer map is reduced to this width before the decoder joins it", 8, 256)
    dropout: float = knob("dropout before the last 1x1 classifier", 0.0, 0.9)


# -- backbones -----------------------------------------------------------------------------------------

class Backbone(nn.Module):
    """Feature maps [finer, coarsest] (or [coarsest]) of images; `channels` and `stride` per map."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]


class ViTBackbone(Backbone):
    """A timm VisionTransformer as dense features: its last patch tokens as a map, plus, for a
    hybrid, the CNN stem's output (finer), caught with a forward hook on the unmodified stem.

    The ViT must accept any input size divisible by its token stride (timm's
    ``dynamic_img_size``), so random-scale crops and multi-scale inference work.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        # The classification head is never run here: frozen, so that DDP does not wait for its gradients.
        vit.get_classifier().requires_grad_(False)
        self.token_stride = vit.patch_embed.img_size[0] // vit.patch_embed.grid_size[0]
        if is_hybrid(vit):
            stem = vit.patch_embed.backbone
            stem.register_forward_hook(_keep_output)
            with torch.no_grad():
                was_training = stem.training
                stem.eval()
                probe = stem(torch.zeros(1, 3, self.token_stride * 2, self.token_stride * 2))
                stem.train(was_training)
            del stem.kept_output
            stem_stride = self.token_stride * 2 // probe.shape[-1]
            self.channels = (probe.shape[1], vit.embed_dim)
            self.strides = (stem_stride, self.token_stride)
        else:
            self.channels = (vit.embed_dim,)
            self.strides = (self.token_stride,)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        height, width = images.shape[-2:]
        if height % self.token_stride or width % self.token_stride:
            raise ValueError(f"input {height}x{width} is not a multiple of the ViT's token stride {self.token_stride}")
        tokens = self.vit.forward_features(images)[:, self.vit.num_prefix_tokens:]
        grid = (height // self.token_stride, width // self.token_stride)
        coarse = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
        if not self.strides[:-1]:
            return [coarse]
        stem_module = self.vit.patch_embed.backbone
        stem = stem_module.kept_output
        del stem_module.kept_output
        return [stem[-1] if isinstance(stem, (list, tuple)) else stem, coarse]


def _keep_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Forward hook: the CNN stem's feature map, kept on the stem itself (so that a copy of the
    network, e.g. a dry run's on the meta device, keeps its own) until the backbone takes it."""
    module.kept_output = output


class TimmCNNBackbone(Backbone):
    """A timm model built with ``features_only``: the stride-4 (or finest) map and the last map."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        info = model.feature_info
        reductions = info.reduction()
        self.fine = min(range(len(reductions)), key=lambda i: abs(reductions[i] - 4))
        self.channels = (info.channels()[self.fine], info.channels()[-1])
        self.strides = (reductions[self.fine], reductions[-1])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps = self.model(images)
        return [maps[self.fine], maps[-1]]


BackboneBuilder = Callable[[Union[bool, str], "str | os.PathLike"], Backbone]
BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Register a builder ``(weights, classifier_path) -> Backbone`` under ``name``."""

    def add(builder: BackboneBuilder) -> BackboneBuilder:
        BACKBONES[name] = builder
        return builder

    return add


def _vit_from_meta(info: dict[str, Any]) -> nn.Module:
    """A freshly initialised ViT of the shape a classifier checkpoint's metadata records."""
    demo = from_mapping(DemoHybridConfig, info["demo_hybrid"], "demo_hybrid") if info.get("demo_hybrid") else None
    return build_classifier(info["model"], info["num_classes"], info["image_size"], False, demo, dynamic_img_size=True)


def _load_weights(module: nn.Module, path: str) -> None:
    try:
        load_local_weights(module, path)
    except ModelError as error:  # the shared loader names the classifier's param; this one is train_seg's
        raise ModelError(str(error).replace("train_cls.pretrained", "train_seg.weights")) from None


@register_backbone("classifier")
def classifier_backbone(weights: bool | str, classifier_path: str | os.PathLike) -> Backbone:
    """train_cls's ViT (its shape from the checkpoint) with its weights, random ones, or a file's."""
    if weights is True:
        raise ModelError("train_seg.weights: true would download; use classifier, false or a local checkpoint path")
    vit, meta = load_classifier(classifier_path)
    if weights == "classifier":
        state = vit.state_dict()
        vit = _vit_from_meta(meta)  # the same weights, in a model that takes any input size
        vit.load_state_dict(state)
    else:
        vit = _vit_from_meta(meta)
        if isinstance(weights, str):
            _load_weights(vit, weights)
    return ViTBackbone(vit.train())


def timm_backbone(name: str, weights: bool | str) -> Backbone:
    """A timm CNN with ``features_only`` (no download: local weights or random)."""
    if weights is True or weights == "classifier":
        raise ModelError(f"train_seg.weights: '{weights}' does not apply to the timm backbone '{name}'; "
                         "use false (random) or a local checkpoint path (nothing is downloaded)")
    try:
        model = timm.create_model(name, pretrained=False, features_only=True)
    except Exception as error:
        raise ModelError(f"train_seg.backbone: '{name}' is neither 'classifier' nor a timm model that supports "
                         f"features_only ({type(error).__name__}: {error})") from error
    if isinstance(weights, str):
        _load_weights(model, weights)
    return TimmCNNBackbone(model)


def build_backbone(name: str, weights: bool | str, classifier_path: str | os.PathLike) -> Backbone:
    if name in BACKBONES:
        return BACKBONES[name](weights, classifier_path)
    return timm_backbone(name, weights)


# -- head ----------------------------------------------------------------------------------------------

def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, one dilated 3x3 branch per rate, and the
    image-level mean, concatenated and projected to `channels`."""

    def __init__(self, in_channels: int, channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(in_channels, channels, 1)] +
                                      [_conv_bn_relu(in_channels, channels, 3, rate) for rate in rates])
        # No BatchNorm on the pooled branch: its 1x1 map has one value per image and channel.
        self.pooled = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.project = _conv_bn_relu(channels * (len(rates) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class Segmenter(nn.Module):
    """Backbone -> ASPP on the coarsest map -> (v3+ decoder with the finer map) -> class logits
    at the input's resolution."""

    def __init__(self, backbone: Backbone, num_classes: int, config: SegmenterConfig) -> None:
        super().__init__()
        self.backbone = backbone
        channels = config.aspp_channels
        self.aspp = ASPP(backbone.channels[-1], channels, config.aspp_rates)
        self.has_decoder = len(backbone.channels) > 1
        if self.has_decoder:
            self.reduce = _conv_bn_relu(backbone.channels[0], config.low_level_channels, 1)
            self.fuse = nn.Sequential(_conv_bn_relu(channels + config.low_level_channels, channels, 3),
                                      _conv_bn_relu(channels, channels, 3))
        self.classify = nn.Sequential(nn.Dropout(config.dropout), nn.Conv2d(channels, num_classes, 1))
        self.stride = min(backbone.strides)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        x = self.aspp(features[-1])
        if self.has_decoder:
            fine = self.reduce(features[0])
            x = F.interpolate(x, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            x = self.fuse(torch.cat([x, fine], dim=1))
        return F.interpolate(self.classify(x), size=images.shape[-2:], mode="bilinear", align_corners=False)

    def new_parameters(self) -> list[nn.Parameter]:
        """Everything but the backbone: trained with ``new_layer_lr_mult`` x lr."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


def input_multiple(backbone: Backbone) -> int:
    """Input sides must be multiples of this (the coarsest stride)."""
    return max(backbone.strides)


def build_segmenter(config: SegmenterConfig, num_classes: int, classifier_path: str | os.PathLike) -> Segmenter:
    """The network of `config` for ``num_classes`` labels (background included)."""
    return Segmenter(build_backbone(config.backbone, config.weights, classifier_path), num_classes, config)


# -- checkpoints ---------------------------------------------------------------------------------------

def segmenter_meta(config: SegmenterConfig, class_names: Sequence[str], classifier_path: str | os.PathLike) -> dict[str, Any]:
    """What `load_segmenter` needs to rebuild the network without the pipeline: the architecture,
    the classifier checkpoint's metadata (for the ViT backbone) and the class names."""
    meta: dict[str, Any] = {"segmenter": asdict(config), "class_names": ["background", *class_names]}
    if config.backbone == "classifier":
        meta["classifier"] = torch.load(classifier_path, map_location="cpu", weights_only=False)["meta"]
    return meta


def load_segmenter(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Segmenter, dict[str, Any]]:
    """A network written by train_seg, in eval mode; needs no other file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found: run `dvc repro train_seg` (or `dvc pull`) first, or pass --model")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        meta = checkpoint["meta"]
        config = from_mapping(SegmenterConfig, {**meta["segmenter"], "weights": False}, "segmenter")
    except Exception as error:  # torch.load raises pickle, zip and runtime errors for foreign or truncated files
        raise InputError(f"{path} is not a vit-wsss segmenter checkpoint ({type(error).__name__}: {error}); "
                         "rerun train_seg or pass the right --model") from error
    backbone = ViTBackbone(_vit_from_meta(meta["classifier"])) if config.backbone == "classifier" else timm_backbone(config.backbone, False)
    net = Segmenter(backbone, len(meta["class_names"]), config)
    net.load_state_dict(checkpoint["state_dict"])
    return net.to(device).eval(), meta
