"""The segmentation network: it learns, its test-time averaging is what it claims, its
augmentation is a function of (seed, epoch, index), checkpoints stand alone, and `wsss predict`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.classifier.model import DemoHybridConfig, build_classifier, classifier_meta, save_checkpoint
from pipeline.core.errors import InputError
from pipeline.data.augment import sample_rng
from pipeline.data.preprocess import normalise, to_tensor
from pipeline.evaluation.pseudo_labels import SegmentationScore
from pipeline.segmentation.infer import predict_probs
from pipeline.segmentation.net import SegmenterConfig, build_segmenter, load_segmenter, segmenter_meta
from pipeline.segmentation.train import IGNORE, SegTrainConfig, random_scale_crop, train_segmenter
from tests.conftest import run

TINY = DemoHybridConfig(stem_channels=(16, 32), embed_dim=48, depth=1, num_heads=2, mlp_ratio=2.0, patch_size=2)
HEAD = SegmenterConfig(backbone="classifier", weights="classifier", aspp_rates=[1, 2], aspp_channels=32, low_level_channels=16, dropout=0.0)
CLASSES = ["disc", "square"]


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    """A randomly initialised tiny demo hybrid (stem stride 4, tokens at stride 8) saved as train_cls would."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("classifier") / "classifier.pt"
    model = build_classifier("demo_hybrid", len(CLASSES), 64, False, TINY)
    save_checkpoint(path, model, classifier_meta("demo_hybrid", len(CLASSES), 64, CLASSES, TINY))
    return path


def scenes(count: int, size: int = 64, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images with a red disc (class 1) and a blue square (class 2) on textured grey, and their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(count):
        image = (rng.normal(120, 12, (size, size, 3))).clip(0, 255)
        mask = np.zeros((size, size), np.uint8)
        cy, cx, r = rng.integers(14, size - 14, 2).tolist() + [int(rng.integers(8, 13))]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        top, left = rng.integers(2, size - 20, 2)
        square = np.zeros_like(disc)
        square[top:top + 16, left:left + 16] = True
        square &= ~disc
        image[disc], mask[disc] = (210, 40, 40), 1
        image[square], mask[square] = (40, 60, 210), 2
        images.append(image.astype(np.uint8))
        masks.append(mask)
    return images, masks


def train_config(**overrides) -> SegTrainConfig:
    settings = dict(network=HEAD, supervision="ground_truth", splits=["train"], epochs=60, batch_size=4, optimizer="adamw", lr=1e-3,
                    new_layer_lr_mult=10.0, weight_decay=0.0, poly_power=0.9, crop_size=64, scale_range=[1.0, 1.0], hflip=True, seed=0, amp="off")
    return SegTrainConfig(**settings | overrides)


def test_overfits_four_images_of_their_own_ground_truth(classifier_path):
    """A real learning check: four images, trained on their masks, are segmented at >= 90 mIoU."""
    images, masks = scenes(4)
    torch.manual_seed(0)
    net = build_segmenter(HEAD, len(CLASSES) + 1, classifier_path)
    history = train_segmenter(net, images, masks, train_config())
    assert history[-1]["loss"] < history[0]["loss"] / 4
    score = SegmentationScore(len(CLASSES) + 1)
    for image, mask in zip(images, masks):
        score.add(predict_probs(net, image, [1.0], False).argmax(axis=0).astype(np.uint8), mask)
    assert score.miou() * 100 >= 90, f"train mIoU {score.miou() * 100:.1f} after {len(history)} epochs"


def test_multiscale_flip_prediction_equals_a_slow_loop_over_scales_and_mirrors(classifier_path):
    torch.manual_seed(1)
    net = build_segmenter(HEAD, len(CLASSES) + 1, classifier_path).double().eval()
    image = scenes(1, size=72)[0][0][:, :60]  # not square, not a multiple of the stride
    scales = [0.75, 1.0, 1.5]
    fast = predict_probs(net, image, scales, flip=True)
    x = normalise(to_tensor([image])).double()
    outputs = []
    with torch.no_grad():
        for scale in scales:
            # Sides rounded to the nearest multiple of the token stride (8).
            size = tuple(max(8, int(round(side * scale / 8)) * 8) for side in image.shape[:2])
            for mirrored in (False, True):
                one = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                one = one.flip(-1) if mirrored else one
                logits = F.interpolate(net(one), size=image.shape[:2], mode="bilinear", align_corners=False)
                probs = logits.softmax(dim=1)[0]
                outputs.append(probs.flip(-1) if mirrored else probs)
    slow = torch.stack(outputs).mean(dim=0).numpy()
    assert fast.shape == (len(CLASSES) + 1, *image.shape[:2])
    # float64 network, batch of two vs one image at a time: the sums agree to ~1e-15; the fast
    # path then rounds its mean to float32, which moves a probability in [0, 1] by at most half
    # an ulp at 1, 2**-25. A wrong scale, size or un-mirroring differs by orders of magnitude more.
    np.testing.assert_allclose(fast, slow, rtol=0, atol=2.0 ** -24)
    np.testing.assert_allclose(fast.sum(axis=0), 1.0, atol=1e-6)  # float32 result of a float64 mean


def test_a_sample_crop_depends_on_seed_epoch_and_index_only():
    image, mask = (a[0] for a in scenes(1))
    crop = lambda seed, epoch, index: random_scale_crop(image, mask, 48, [0.5, 1.5], True, sample_rng(seed, epoch, index))
    first, again = crop(0, 1, 5), crop(0, 1, 5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], crop(0, 2, 5)[0])
    assert not np.array_equal(first[0], crop(0, 1, 6)[0])


def test_crops_pad_images_with_the_mean_colour_and_labels_with_ignore():
    image, mask = (a[0][:20, :20] for a in scenes(1))
    crop_image, crop_label = random_scale_crop(np.ascontiguousarray(image), np.ascontiguousarray(mask), 48, [1.0, 1.0], False, sample_rng(0, 0, 0))
    assert crop_image.shape == (48, 48, 3) and crop_label.shape == (48, 48)
    assert (crop_label == IGNORE).sum() == 48 * 48 - 20 * 20
    assert np.all(crop_image[crop_label == IGNORE] == 128)
    assert np.array_equal(crop_label[crop_label != IGNORE].reshape(20, 20), mask[:20, :20])


def saved_segmenter(classifier_path, path, seed: int):
    """A randomly initialised segmenter over the tiny classifier, saved as train_seg does."""
    torch.manual_seed(seed)
    net = build_segmenter(HEAD, len(CLASSES) + 1, classifier_path).eval()
    save_checkpoint(path, net, segmenter_meta(HEAD, CLASSES, classifier_path))
    return net


def test_checkpoint_rebuilds_the_network_without_the_classifier_file(classifier_path, tmp_path):
    path = tmp_path / "segmenter.pt"
    net = saved_segmenter(classifier_path, path, seed=2)
    copy = tmp_path / "moved.pt"
    path.rename(copy)
    loaded, meta = load_segmenter(copy)
    image = scenes(1)[0][0]
    assert meta["class_names"] == ["background", *CLASSES]
    np.testing.assert_array_equal(predict_probs(loaded, image, [1.0], True), predict_probs(net, image, [1.0], True))


def test_weights_false_gives_a_fresh_backbone_and_classifier_gives_the_trained_one(classifier_path):
    trained = torch.load(classifier_path, weights_only=False)["state_dict"]
    key = "patch_embed.proj.weight"
    kept = build_segmenter(HEAD, 3, classifier_path).backbone.vit.state_dict()[key]
    torch.manual_seed(123)
    fresh = build_segmenter(SegmenterConfig(**{**HEAD.__dict__, "weights": False}), 3, classifier_path).backbone.vit.state_dict()[key]
    assert torch.equal(kept, trained[key])
    assert not torch.equal(fresh, trained[key])


@pytest.mark.slow  # `wsss` / python subprocesses that import torch
def test_predict_writes_every_good_image_and_names_the_corrupt_one(classifier_path, tmp_path):
    model = tmp_path / "segmenter.pt"
    saved_segmenter(classifier_path, model, seed=3)
    folder = tmp_path / "images"
    folder.mkdir()
    images, _ = scenes(2)
    Image.fromarray(images[0]).save(folder / "colour.jpg")
    Image.fromarray(images[1][:50, :37, 0]).save(folder / "grey.png")  # greyscale, odd size
    (folder / "broken.jpg").write_bytes((folder / "colour.jpg").read_bytes()[:200])
    out = tmp_path / "out"
    result = run(["wsss", "predict", str(folder), "--out", str(out), "--model", str(model), "--scales", "1"], tmp_path, check=False)
    assert result.returncode != 0
    assert "broken.jpg" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["colour.png", "colour_overlay.png", "grey.png", "grey_overlay.png"]
    grey = np.asarray(Image.open(out / "grey.png"))
    assert grey.shape == (50, 37) and grey.max() <= len(CLASSES)


def test_a_file_that_is_not_a_segmenter_checkpoint_ends_in_one_message(tmp_path):
    bogus = tmp_path / "segmenter.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="segmenter.pt is not a vit-wsss segmenter checkpoint"):
        load_segmenter(bogus)
