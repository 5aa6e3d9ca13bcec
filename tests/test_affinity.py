import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.data.augment import augment, sample_rng
from pipeline.refine.affinity.net import AffinityNet, pairwise_affinity, predict_affinity
from pipeline.refine.affinity.pairs import BG_POSITIVE, FG_POSITIVE, IGNORE, NEGATIVE, half_disc_offsets, pair_codes, pair_counts
from pipeline.refine.affinity.train import AffinityTrainConfig, affinity_loss, train_affinitynet
from tests.configs import project_config


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 7])
def test_half_disc_is_half_of_the_disc(radius):
    offsets = half_disc_offsets(radius)
    disc = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if 0 < dy * dy + dx * dx < radius * radius]
    assert len(offsets) == len(set(offsets)) == len(disc) // 2
    assert set(offsets) | {(-dy, -dx) for dy, dx in offsets} == set(disc)
    assert all(dy > 0 or (dy == 0 and dx > 0) for dy, dx in offsets)


def test_radius_five_has_34_offsets():
    assert len(half_disc_offsets(5)) == 34


def _brute_force_pairs(labels, radius):
    """Every unordered pair of pixels within the radius, with its kind, by O(N^2) enumeration."""
    h, w = labels.shape
    pixels = [(y, x) for y in range(h) for x in range(w)]
    pairs = {}
    for a, (y1, x1) in enumerate(pixels):
        for (y2, x2) in pixels[a + 1:]:
            if (y1 - y2) ** 2 + (x1 - x2) ** 2 >= radius * radius:
                continue
            l1, l2 = labels[y1, x1], labels[y2, x2]
            if l1 == 255 or l2 == 255:
                continue
            kind = NEGATIVE if l1 != l2 else (BG_POSITIVE if l1 == 0 else FG_POSITIVE)
            pairs[frozenset({(y1, x1), (y2, x2)})] = kind
    return pairs


def _pairs_from_codes(codes, offsets):
    pairs = {}
    for p, y, x in zip(*np.nonzero(codes != IGNORE)):
        dy, dx = offsets[p]
        key = frozenset({(y, x), (y + dy, x + dx)})
        assert key not in pairs, "an unordered pair was listed twice"
        pairs[key] = codes[p, y, x]
    return pairs


def test_pair_codes_match_brute_force():
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([0, 0, 3, 5, 255], np.uint8), size=(7, 9))
    offsets = half_disc_offsets(4)
    codes = pair_codes(labels, offsets)
    assert codes.shape == (len(offsets), 7, 9) and codes.dtype == np.uint8
    pairs = _pairs_from_codes(codes, offsets)
    for key in pairs:  # both ends inside the image
        assert all(0 <= y < 7 and 0 <= x < 9 for y, x in key)
    assert pairs == _brute_force_pairs(labels, 4)


def test_pair_counts_hand_cases():
    offsets = half_disc_offsets(2)  # (0, 1), (1, -1), (1, 0), (1, 1)
    assert pair_counts(pair_codes(np.array([[0, 0, 1]], np.uint8), offsets)) == {
        "negative": 1, "bg_positive": 1, "fg_positive": 0, "ignore": 4 * 3 - 2}
    assert pair_counts(pair_codes(np.array([[0, 255, 1, 1]], np.uint8), offsets)) == {
        "negative": 0, "bg_positive": 0, "fg_positive": 1, "ignore": 4 * 4 - 1}
    # 2x2: four pixels, six pairs within radius 2 (sides and diagonals).
    block = np.array([[0, 0], [2, 2]], np.uint8)
    assert pair_counts(pair_codes(block, offsets)) == {
        "negative": 4, "bg_positive": 1, "fg_positive": 1, "ignore": 4 * 4 - 6}


def test_flipped_label_map_keeps_pair_counts():
    rng = np.random.default_rng(2)
    labels = rng.choice(np.array([0, 1, 255], np.uint8), size=(6, 8))
    offsets = half_disc_offsets(3)
    assert pair_counts(pair_codes(labels[:, ::-1], offsets)) == pair_counts(pair_codes(labels, offsets))


def test_pairwise_affinity_values():
    offsets = [(0, 1), (1, -1)]
    features = torch.zeros(1, 2, 2, 3)
    features[0, :, 0, 1] = torch.tensor([1.0, 3.0])
    aff = pairwise_affinity(features, offsets)
    assert aff.shape == (1, 2, 2, 3)
    # float32 elementwise exp of an exact mean (no reduction-order dependence): ≤ ~2 ulp (2.4e-7) < approx's 1e-6
    assert aff[0, 0, 0, 0] == pytest.approx(math.exp(-2.0))  # (0,0)-(0,1): mean |0-1|,|0-3| = 2
    assert aff[0, 0, 1, 0] == pytest.approx(1.0)  # identical features
    assert torch.all(aff[0, 0, :, 2] == 0)  # right partner outside
    assert torch.all(aff[0, 1, 1] == 0) and aff[0, 1, 0, 0] == 0  # bottom row / left edge partners outside
    assert aff[0, 1, 0, 2] == pytest.approx(1.0)


def test_affinity_loss_hand_case():
    affinity = torch.tensor([0.5, 1.0, 0.25, 0.5, 0.9])
    codes = torch.tensor([BG_POSITIVE, FG_POSITIVE, FG_POSITIVE, NEGATIVE, IGNORE], dtype=torch.uint8)
    loss, parts = affinity_loss(affinity, codes)
    # float32 logs and means of ≤ 2 terms against float64 math: a few ulp (≤ ~4e-7 relative) < approx's rel 1e-6
    eps = 1e-5
    bg = -math.log(0.5 + eps)
    fg = -(math.log(1.0 + eps) + math.log(0.25 + eps)) / 2
    neg = -math.log(1 - 0.5 + eps)
    assert parts["bg_positive"] == pytest.approx(bg)
    assert parts["fg_positive"] == pytest.approx(fg)
    assert parts["negative"] == pytest.approx(neg)
    assert float(loss) == pytest.approx(bg + fg + 2 * neg) == pytest.approx(parts["loss"])
    _, reference = affinity_loss(affinity, codes, weights=(0.25, 0.25, 0.5))
    assert reference["loss"] == pytest.approx(parts["loss"] / 4)


def test_affinity_loss_empty_sets_contribute_zero():
    affinity = torch.full((3,), 0.7, requires_grad=True)
    loss, parts = affinity_loss(affinity, torch.tensor([FG_POSITIVE, IGNORE, IGNORE], dtype=torch.uint8))
    assert parts["bg_positive"] == 0 and parts["negative"] == 0
    assert parts["loss"] == pytest.approx(-math.log(0.7 + 1e-5))
    loss, parts = affinity_loss(affinity, torch.full((3,), IGNORE, dtype=torch.uint8))
    loss.backward()  # no pairs at all: zero loss, still differentiable
    assert parts["loss"] == 0 and torch.all(affinity.grad == 0)


def _tiny_net(seed=0):
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    return AffinityNet(backbone, in_channels=8, hidden_channels=16, out_channels=8)


def test_affinitynet_shapes_and_parameter_groups():
    net = _tiny_net()
    out = net(torch.randn(2, 3, 16, 12))
    assert out.shape == (2, 8, 8, 6)
    new = {id(p) for p in net.new_parameters()}
    old = {id(p) for p in net.backbone_parameters()}
    assert new and old and not new & old and new | old == {id(p) for p in net.parameters()}
    aff = predict_affinity(net, torch.randn(2, 3, 16, 12), half_disc_offsets(3))
    assert aff.shape == (2, 12, 8, 6) and net.training


def _toy_set(n=4, size=16):
    """Images with a bright square on dark ground; labels on the stride-2 grid, edge ring neutral."""
    rng = np.random.default_rng(3)
    images, labels = [], []
    for _ in range(n):
        top, left = rng.integers(0, size // 2, size=2)
        image = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
        image[top:top + size // 2, left:left + size // 2] += 200
        label = np.zeros((size // 2, size // 2), np.uint8)
        label[top // 2:top // 2 + size // 4, left // 2:left // 2 + size // 4] = 1
        images.append(image)
        labels.append(label)
    return images, labels


def test_training_loss_falls_and_is_deterministic():
    images, labels = _toy_set()
    offsets = half_disc_offsets(3)
    config = project_config("train_aff", AffinityTrainConfig, epochs=6, lr=0.005, batch_size=2, seed=7, freeze_backbone_norm=False)
    net = _tiny_net()
    twin = copy.deepcopy(net)
    seen = []
    history = train_affinitynet(net, images, labels, offsets, config, progress=seen.append)
    assert len(history) == 6 and sum(seen) == 6 * 4
    assert set(history[0]) >= {"epoch", "loss", "bg_positive", "fg_positive", "negative", "lr"}
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["lr"] < config.lr
    again = train_affinitynet(twin, images, labels, offsets, config, progress=None)
    assert again == history
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_training_rejects_label_grid_mismatch():
    images, labels = _toy_set()
    with pytest.raises(ValueError, match="grid"):
        train_affinitynet(_tiny_net(), images, [l[:4] for l in labels], half_disc_offsets(2),
                          project_config("train_aff", AffinityTrainConfig, epochs=1, lr=0.01, batch_size=2))


def test_augment_flips_image_and_labels_together():
    labels = np.zeros((6, 3, 4), np.uint8)
    labels[:, :, 0] = 1  # left column is foreground
    images = torch.zeros(6, 3, 6, 8, dtype=torch.uint8)
    images[:, :, :, :2] = 255  # matching left image columns are bright
    out, out_labels = augment(images, True, 0.0, [sample_rng(0, 0, i) for i in range(6)], labels)
    flipped = out_labels[:, 0, -1] == 1
    assert 0 < flipped.sum() < 6  # some flipped, some not, with this seed
    for b in range(6):
        bright_right = bool(out[b, 0, 0, -1] == 1.0)
        assert bright_right == flipped[b]
        assert (out_labels[b, :, 0] == 1).all() != flipped[b]
    assert out.dtype == torch.float32 and labels[:, :, 0].all()  # input labels untouched


def test_augmentation_of_a_sample_does_not_depend_on_its_batch():
    """What sample i gets is a function of (seed, epoch, i): alone or in a batch, at any position."""
    images = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (5, 3, 6, 8), dtype=np.uint8))
    whole, _ = augment(images, True, 0.4, [sample_rng(7, 2, i) for i in range(5)])
    for i in (0, 3):
        alone, _ = augment(images[i : i + 1], True, 0.4, [sample_rng(7, 2, i)])
        torch.testing.assert_close(alone[0], whole[i], rtol=0, atol=0)
    other_epoch, _ = augment(images, True, 0.4, [sample_rng(7, 3, i) for i in range(5)])
    assert not torch.equal(other_epoch, whole)
