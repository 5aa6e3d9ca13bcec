"""Classifier construction (timm ViTs and the small demo hybrid), checkpoints, feature maps.

The demo hybrid is assembled from timm parts only: a timm `VisionTransformer` whose patch
embedding is timm's `HybridEmbed` over a small convolutional stem, so every tool that works
on timm hybrids (relevance, AffinityNet backbone) works on it unchanged.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
from timm.layers import HybridEmbed
from timm.models.vision_transformer import VisionTransformer

from pipeline.core.config import from_mapping, knob
from pipeline.core.errors import InputError
from pipeline.core.eval_mode import eval_mode
from pipeline.core.files import atomic_path
from pipeline.data.preprocess import MEAN, STD

DEMO_HYBRID = "demo_hybrid"


class ModelError(InputError):
    """A model name, checkpoint or weight source that cannot be used; the message says the fix."""


@dataclass(frozen=True)
class DemoHybridConfig:
    """Shape of the demo hybrid: conv stem (stride 2 per entry of `stem_channels`), then a ViT."""

    stem_channels: tuple[int, ...] = knob("conv stem widths; each entry is one stride-2 stage", 1, 1024)
    embed_dim: int = knob("token width", 8, 4096)
    depth: int = knob("transformer blocks", 1, 64)
    num_heads: int = knob("attention heads per block (must divide embed_dim)", 1, 64)
    mlp_ratio: float = knob("MLP hidden width / embed_dim", 0.5, 8.0)
    patch_size: int = knob("patch side on the stem's output map", 1, 8)

    def check(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide embed_dim={self.embed_dim}")


def conv_stem(channels: tuple[int, ...], in_chans: int = 3) -> nn.Sequential:
    """Each stage halves the resolution (3x3 stride-2 conv) then refines (3x3 conv); BN + ReLU."""
    layers: list[nn.Module] = []
    previous = in_chans
    for width in channels:
        layers += [
            nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        previous = width
    return nn.Sequential(*layers)


def demo_hybrid(num_classes: int, image_size: int, config: DemoHybridConfig, dynamic_img_size: bool = False) -> VisionTransformer:
    """A timm VisionTransformer over a HybridEmbed of `conv_stem`; tokens at stride 2**len(stem) * patch."""
    stride = 2 ** len(config.stem_channels) * config.patch_size
    if image_size % stride:
        raise ModelError(f"train_cls.image_size={image_size} must be a multiple of the demo hybrid's token stride {stride}")
    # VisionTransformer passes its own patch_size to the embedding: it is the patch on the stem's map.
    embed = partial(HybridEmbed, backbone=conv_stem(config.stem_channels))
    return VisionTransformer(
        img_size=image_size,
        patch_size=config.patch_size,
        num_classes=num_classes,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        embed_layer=embed,
        global_pool="token",
        dynamic_img_size=dynamic_img_size,
    )


def _is_vit(name: str) -> bool:
    """A registered timm model whose constructor builds a VisionTransformer (plain, hybrid or DeiT)."""
    if not timm.models.is_model(name):
        return False
    return timm.models.model_entrypoint(name).__module__.endswith(("vision_transformer", "vision_transformer_hybrid", "deit"))


def build_classifier(
    name: str,
    num_classes: int,
    image_size: int,
    pretrained: bool | str = False,
    demo_config: DemoHybridConfig | None = None,
    dynamic_img_size: bool = False,
) -> VisionTransformer:
    """A multi-label ViT classifier.

    `name` is `demo_hybrid` or any timm ViT/DeiT name (plain or hybrid `vit_*_r*_*`).
    `pretrained`: False (random init), True (timm's hub; needs the internet), or a path to a
    local checkpoint (a timm/torch state dict, or a vit-wsss classifier.pt); the head is
    re-initialised for `num_classes`. `dynamic_img_size` lets the model take other input sizes
    (position embedding resized on the fly), as multi-scale inference needs.
    """
    if name == DEMO_HYBRID:
        if pretrained is True:
            raise ModelError("train_cls.pretrained: the demo hybrid has no hub weights; use false or a local checkpoint path")
        if demo_config is None:
            raise ModelError("train_cls.demo_hybrid: the demo hybrid needs its shape (stem_channels, embed_dim, ...)")
        model = demo_hybrid(num_classes, image_size, demo_config, dynamic_img_size)
    else:
        if not _is_vit(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:5] if name else []
            raise ModelError(
                f"train_cls.model: '{name}' is not a timm ViT model name (e.g. vit_small_patch16_224, deit_tiny_patch16_224, "
                f"vit_small_r26_s32_224, or demo_hybrid)" + (f"; similar names: {', '.join(close)}" if close else "")
            )
        try:
            model = timm.create_model(name, pretrained=pretrained is True, num_classes=num_classes, img_size=image_size, dynamic_img_size=dynamic_img_size)
        except Exception as error:
            if pretrained is True:
                raise ModelError(
                    f"train_cls.pretrained: true could not fetch weights for '{name}' from the hub ({type(error).__name__}: {error}). "
                    "Offline? Download the weights elsewhere and set train_cls.pretrained to the local file path, or use false."
                ) from error
            raise
    if isinstance(pretrained, str):
        load_local_weights(model, pretrained)
    if not isinstance(model, VisionTransformer):
        raise ModelError(f"train_cls.model: '{name}' is not a timm VisionTransformer")
    return model


def load_local_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load matching tensors from a local checkpoint; the classification head is skipped if shapes differ."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"train_cls.pretrained: checkpoint '{path}' not found; give an existing file, true (hub) or false")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ModelError(f"train_cls.pretrained: '{path}' is not a readable torch checkpoint ({error})") from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelError(f"train_cls.pretrained: no tensor in '{path}' matches the model's parameters; is it for this architecture?")
    model.load_state_dict(usable, strict=False)


def is_hybrid(model: VisionTransformer) -> bool:
    return isinstance(model.patch_embed, HybridEmbed)


def token_grid(model: VisionTransformer) -> tuple[int, int]:
    return tuple(model.patch_embed.grid_size)


def token_stride(model: VisionTransformer) -> int:
    image_size = model.patch_embed.img_size[0]
    return image_size // model.patch_embed.grid_size[0]


class StemFeatures(nn.Module):
    """The CNN stem of a hybrid ViT as a feature extractor (B, C, H/s, W/s)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        return features[-1] if isinstance(features, (list, tuple)) else features


class TokenFeatures(nn.Module):
    """A plain ViT's final patch tokens reshaped to their grid (B, D, gh, gw)."""

    def __init__(self, vit: VisionTransformer):
        super().__init__()
        self.vit = vit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(images)[:, self.vit.num_prefix_tokens :]
        gh, gw = self.vit.patch_embed.grid_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)


def feature_backbone(model: VisionTransformer, image_size: int) -> tuple[nn.Module, int, int]:
    """The feature map AffinityNet builds on, with its channel count and stride.

    A hybrid gives its CNN stem (finer than the tokens); a plain ViT its patch-token map.
    """
    backbone: nn.Module = StemFeatures(model.patch_embed.backbone) if is_hybrid(model) else TokenFeatures(model)
    with eval_mode(backbone), torch.no_grad():
        probe = backbone(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    return backbone, probe.shape[1], image_size // probe.shape[-1]


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> None:
    """Weights plus the metadata needed to rebuild the network (`load_classifier`, `load_affinitynet`), written atomically."""
    with atomic_path(path) as tmp:
        torch.save({"meta": meta, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, tmp)


def classifier_meta(name: str, num_classes: int, image_size: int, class_names: list[str], demo_config: DemoHybridConfig | None) -> dict[str, Any]:
    return {
        "model": name,
        "num_classes": num_classes,
        "image_size": image_size,
        "class_names": list(class_names),
        "demo_hybrid": asdict(demo_config) if (demo_config and name == DEMO_HYBRID) else None,
        "mean": list(MEAN),
        "std": list(STD),
    }


def load_classifier(path: str | os.PathLike, device: torch.device | str = "cpu", dynamic_img_size: bool = False) -> tuple[VisionTransformer, dict[str, Any]]:
    """Rebuild a classifier written by `save_checkpoint`, in eval mode, without touching the network."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} not found: run `dvc repro train_cls` (or `dvc pull`) first")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "meta" not in checkpoint:
        raise ModelError(f"{path} is not a vit-wsss classifier checkpoint; rerun train_cls")
    meta = checkpoint["meta"]
    demo = meta.get("demo_hybrid")
    demo_config = from_mapping(DemoHybridConfig, demo, "demo_hybrid") if demo else None
    model = build_classifier(meta["model"], meta["num_classes"], meta["image_size"], pretrained=False, demo_config=demo_config, dynamic_img_size=dynamic_img_size)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), meta
