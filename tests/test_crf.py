import dataclasses

import numpy as np
import pytest

from pipeline.refine.calibration import calibrate_peaks
from pipeline.refine.confident import CRFConfig, confident_labels, confident_labels_many
from pipeline.refine.dense_crf import dense_crf, scaled_to
from tests.configs import project_config

SIZE = 48


def _square_case(label_value=3, seed_value=1.0):
    """A bright square on a dark image and a soft seed blob centred on it."""
    image = np.full((SIZE, SIZE, 3), 30, np.uint8)
    image[12:36, 12:36] = 220
    yy, xx = np.mgrid[:SIZE, :SIZE]
    blob = seed_value * np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / (2 * 8.0**2))
    return image, blob[None].astype(np.float32), [label_value]


# The reference settings scaled to the test images by hand; confident_labels_many must not rescale them.
REFERENCE = project_config("crf", CRFConfig, scale_with_image=False, workers=1)
PARAMS = scaled_to(REFERENCE, SIZE)


def test_scaled_to_scales_only_spatial_std_devs():
    half = scaled_to(REFERENCE, 250)
    assert half.gauss_sxy == 1.5 and half.bilateral_sxy == 40
    assert half.bilateral_srgb == 13 and half.alpha_low == 4 and half.iterations == 10
    with pytest.raises(ValueError):
        scaled_to(REFERENCE, 0)


def test_dense_crf_returns_marginals():
    image, seeds, _ = _square_case()
    probs = np.concatenate([1 - seeds, seeds])
    q = dense_crf(image, probs, PARAMS)
    assert q.shape == (2, SIZE, SIZE) and q.dtype == np.float32
    # float32 marginals normalised over 2 labels: ≲ 2 × eps32 ≈ 2.4e-7 off 1; an unnormalised q is off by O(1)
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="probs"):
        dense_crf(image, probs[:, :10], PARAMS)
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), probs, PARAMS)


def test_clean_square_is_foreground_and_corners_background():
    image, seeds, labels = _square_case()
    out = confident_labels(image, seeds, labels, PARAMS)
    assert out.dtype == np.uint8 and out.shape == (SIZE, SIZE)
    assert np.all(out[14:34, 14:34] == 3)
    for corner in (out[:6, :6], out[:6, -6:], out[-6:, :6], out[-6:, -6:]):
        assert np.all(corner == 0)


def test_calibrate_peaks_divides_each_seed_by_the_mean_of_its_top_pixels():
    seeds = np.random.default_rng(0).random((2, 10, 10)).astype(np.float32)
    out = calibrate_peaks(seeds, 0.1)
    assert out.dtype == np.float32 and out.shape == seeds.shape
    for seed, got in zip(seeds.astype(np.float64), out):
        peak = np.sort(seed.ravel())[-10:].mean()  # the 10 highest of 100 pixels
        # float32: the peak rounded once and one division, each within 6e-8 relative
        np.testing.assert_allclose(got, np.minimum(seed / peak, 1.0), rtol=1e-6)
    # A peak is a scale: quarter seeds (exact in float32) give the same calibrated seeds.
    np.testing.assert_allclose(calibrate_peaks(seeds / 4, 0.1), out, rtol=1e-6)
    assert calibrate_peaks(seeds, 0.0) is seeds  # 0: the reference's single maximum, untouched
    assert calibrate_peaks(np.zeros((1, 4, 4), np.float32), 0.1).max() == 0  # an empty seed stays empty


def test_a_seed_peaking_on_a_corner_of_the_object_labels_all_of_it_once_calibrated():
    image, _, labels = _square_case()
    seed = np.zeros((1, SIZE, SIZE), np.float32)
    seed[0, 12:36, 12:36] = 0.2  # the square, far below the peak ...
    seed[0, 12:16, 12:16] = 1.0  # ... on one corner of it
    square = (slice(12, 36), slice(12, 36))
    single = confident_labels(image, seed, labels, dataclasses.replace(PARAMS, peak_fraction=0.0))[square]
    calibrated = confident_labels(image, seed, labels, dataclasses.replace(PARAMS, peak_fraction=0.15))[square]
    assert (single == labels[0]).mean() < 0.3 and (calibrated == labels[0]).mean() > 0.9


def test_values_are_background_classes_or_neutral():
    image, seeds, _ = _square_case()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    other = np.exp(-((yy - 40) ** 2 + (xx - 8) ** 2) / (2 * 6.0**2))[None].astype(np.float32)
    out = confident_labels(image, np.concatenate([seeds, other]), [5, 17], PARAMS)
    # Two classes, background, and an undecided band where the two CRFs disagree.
    assert set(np.unique(out)) == {0, 5, 17, 255}


def test_no_present_class_is_all_background():
    image, _, _ = _square_case()
    out = confident_labels(image, np.zeros((0, SIZE, SIZE), np.float32), [], PARAMS)
    assert out.shape == (SIZE, SIZE) and out.dtype == np.uint8 and not out.any()
    assert confident_labels(image, np.zeros((0, SIZE, SIZE)), [], PARAMS, pool=8).shape == (6, 6)


def test_pooling_decides_at_feature_resolution():
    image, seeds, labels = _square_case()
    out = confident_labels(image, seeds, labels, PARAMS, pool=8)
    assert out.shape == (6, 6)
    assert out[2:4, 2:4].tolist() == [[3, 3], [3, 3]] and out[0, 0] == 0
    with pytest.raises(ValueError, match="pool"):
        confident_labels(image, seeds, labels, PARAMS, pool=5)


@pytest.mark.parametrize(
    "seeds, labels, match",
    [
        (np.zeros((1, 10, SIZE)), [1], "seeds"),
        (np.zeros((2, SIZE, SIZE)), [1], "class_labels"),
        (np.zeros((1, SIZE, SIZE)), [0], "1..254"),
        (np.zeros((1, SIZE, SIZE)), [255], "1..254"),
        (np.zeros((2, SIZE, SIZE)), [4, 4], "distinct"),
    ],
)
def test_confident_labels_validates_inputs(seeds, labels, match):
    image, _, _ = _square_case()
    with pytest.raises(ValueError, match=match):
        confident_labels(image, seeds, labels, PARAMS)


def test_many_is_ordered_and_worker_count_independent():
    cases = [_square_case(label_value=k, seed_value=v) for k, v in [(2, 1.0), (9, 0.7), (4, 0.4)]]
    images, seeds, labels = (list(x) for x in zip(*cases))
    images.append(images[0])
    seeds.append(np.zeros((0, SIZE, SIZE), np.float32))
    labels.append([])
    ticks = []
    serial = confident_labels_many(images, seeds, labels, PARAMS, progress=ticks.append)
    parallel = confident_labels_many(images, seeds, labels, dataclasses.replace(PARAMS, workers=2))
    assert ticks == [1, 1, 1, 1]
    assert len(serial) == len(parallel) == 4
    for one, two, image, seed, label in zip(serial, parallel, images, seeds, labels):
        np.testing.assert_array_equal(one, two)
        np.testing.assert_array_equal(one, confident_labels(image, seed, label, PARAMS))
    assert 2 in serial[0] and 9 in serial[1] and not serial[3].any()
    with pytest.raises(ValueError, match="differ"):
        confident_labels_many(images, seeds[:2], labels, PARAMS)


def test_read_only_image_is_accepted():
    # Images decoded through PIL arrive as read-only arrays; pydensecrf needs its own copy.
    image = np.zeros((16, 16, 3), np.uint8)
    image[4:12, 4:12] = 200
    image.setflags(write=False)
    seeds = np.zeros((1, 16, 16), np.float32)
    seeds[0, 5:11, 5:11] = 1.0
    labels = confident_labels(image, seeds, [1], scaled_to(REFERENCE, 16))
    assert labels[8, 8] == 1


def test_each_image_gets_settings_scaled_to_its_longer_side():
    image, seeds, labels = _square_case()
    scaled = confident_labels_many([image], [seeds], [labels], dataclasses.replace(REFERENCE, scale_with_image=True))
    np.testing.assert_array_equal(scaled[0], confident_labels(image, seeds, labels, scaled_to(REFERENCE, SIZE)))
