import numpy as np
import pytest
import torch

from pipeline.classifier.model import (
    DemoHybridConfig,
    ModelError,
    build_classifier,
    classifier_meta,
    feature_backbone,
    is_hybrid,
    load_classifier,
    save_checkpoint,
    token_grid,
)
from pipeline.classifier.train import ClassifierConfig, train_classifier
from pipeline.core.config import ConfigError
from pipeline.data.augment import random_rescale, sample_rng
from pipeline.data.preprocess import MEAN
from tests.configs import project_config

TINY = DemoHybridConfig(stem_channels=(8, 16), embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0, patch_size=2)


def _toy_set(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a bright square in the image; class 1: a dark square; labels from what was drawn."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 3, size, size), 128, dtype=np.uint8)
    labels = rng.integers(0, 2, size=(n, 2)).astype(np.float32)
    for i in range(n):
        for c, value in ((0, 255), (1, 0)):
            if labels[i, c]:
                y, x = rng.integers(0, size - 8, size=2)
                images[i, :, y : y + 8, x : x + 8] = value
    return torch.from_numpy(images), torch.from_numpy(labels)


def test_short_training_run_learns():
    torch.manual_seed(0)
    model = build_classifier("demo_hybrid", 2, 32, demo_config=TINY)
    images, labels = _toy_set(64, 32, 0)
    val_images, val_labels = _toy_set(32, 32, 1)
    config = project_config("train_cls", ClassifierConfig, epochs=6, batch_size=16, lr=3e-3, weight_decay=0.0, optimizer="adamw",
                            schedule="cosine", warmup_epochs=0, hflip=True, color_jitter=0.1, seed=0)
    history = train_classifier(model, images, labels, val_images, val_labels.numpy(), config, torch.device("cpu"))
    assert len(history) == 6
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert 0.0 <= history[-1]["val_map"] <= 1.0
    assert not model.training


def test_demo_hybrid_shape_and_feature_backbone():
    model = build_classifier("demo_hybrid", 3, 64, demo_config=TINY)
    assert is_hybrid(model)
    assert token_grid(model) == (8, 8)  # stem stride 4, patch 2
    backbone, channels, stride = feature_backbone(model, 64)
    assert (channels, stride) == (16, 4)
    assert backbone(torch.zeros(2, 3, 64, 64)).shape == (2, 16, 16, 16)


def test_plain_timm_vit_builds_and_gives_token_features():
    model = build_classifier("vit_tiny_patch16_224", 4, 64)
    assert not is_hybrid(model) and token_grid(model) == (4, 4)
    backbone, channels, stride = feature_backbone(model, 64)
    assert (channels, stride) == (192, 16)


def test_checkpoint_round_trip(tmp_path):
    model = build_classifier("demo_hybrid", 3, 32, demo_config=TINY).eval()
    save_checkpoint(tmp_path / "c.pt", model, classifier_meta("demo_hybrid", 3, 32, ["a", "b", "c"], TINY))
    loaded, meta = load_classifier(tmp_path / "c.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["class_names"] == ["a", "b", "c"]


def test_unknown_model_name_is_explained():
    with pytest.raises(ModelError, match="not a timm ViT model name"):
        build_classifier("vit_tinny_patch16_224", 3, 64)
    with pytest.raises(ModelError, match="not a timm ViT"):
        build_classifier("resnet50", 3, 64)


def test_offline_pretrained_true_names_the_fix(monkeypatch):
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("cannot reach the hub: no network")

    # What timm's weight download does without a network, without waiting for its retries.
    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(ModelError, match="local file path"):
        build_classifier("vit_tiny_patch16_224", 3, 64, pretrained=True)


def test_local_checkpoint_weights_are_loaded(tmp_path):
    source = build_classifier("vit_tiny_patch16_224", 5, 64)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    target = build_classifier("vit_tiny_patch16_224", 3, 64, pretrained=str(tmp_path / "w.pth"))
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    with pytest.raises(ModelError, match="not found"):
        build_classifier("vit_tiny_patch16_224", 3, 64, pretrained=str(tmp_path / "missing.pth"))


def test_missing_classifier_checkpoint_is_explained(tmp_path):
    with pytest.raises(ModelError, match="dvc repro train_cls"):
        load_classifier(tmp_path / "none.pt")


def _windows(image: torch.Tensor, side: int) -> list[torch.Tensor]:
    """Every side x side window of a (3, H, W) image."""
    return [image[:, top : top + side, left : left + side]
            for top in range(image.shape[1] - side + 1) for left in range(image.shape[2] - side + 1)]


def test_random_rescale_enlarges_then_takes_a_window():
    images = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = random_rescale(images, (2.0, 2.0), [sample_rng(0, 0, i) for i in range(12)])
    enlarged = torch.nn.functional.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    offsets = set()
    for i in range(12):
        matches = [k for k, window in enumerate(_windows(enlarged[i], 8)) if torch.equal(window, out[i])]
        assert len(matches) == 1, f"sample {i} is not one window of its enlarged image"
        offsets.add(matches[0])
    assert len(offsets) > 1  # the window moves between samples


def test_random_rescale_shrinks_onto_a_mean_canvas():
    images = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = random_rescale(images, (0.5, 0.5), [sample_rng(0, 0, i) for i in range(12)])
    shrunk = torch.nn.functional.interpolate(images, size=(4, 4), mode="bilinear", align_corners=False)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    placements = set()
    for i in range(12):
        inside = [k for k, window in enumerate(_windows(out[i], 4)) if torch.equal(window, shrunk[i])]
        assert len(inside) == 1, f"sample {i} does not hold its shrunk image"
        placements.add(inside[0])
        assert int((out[i] == mean).all(dim=0).sum()) == 64 - 16  # everything else is the mean colour
    assert len(placements) > 1


def test_random_rescale_of_a_sample_does_not_depend_on_its_batch():
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    whole = random_rescale(images, (0.75, 1.5), [sample_rng(7, 2, i) for i in range(5)])
    for i in (0, 3):
        torch.testing.assert_close(random_rescale(images[i : i + 1], (0.75, 1.5), [sample_rng(7, 2, i)])[0], whole[i], rtol=0, atol=0)
    assert random_rescale(images, (1.0, 1.0), []) is images  # off: no draws, the same tensor


def test_scale_range_low_above_high_is_refused():
    with pytest.raises(ConfigError, match="train_cls"):
        project_config("train_cls", ClassifierConfig, scale_range=[1.5, 0.75])
