import numpy as np
import pytest
import scipy.sparse as sp

from pipeline.refine.affinity.pairs import half_disc_offsets
from pipeline.refine.random_walk import RandomWalkConfig, random_walk, refine, transition_matrix
from pipeline.seeds.stored import seed_scores


def _dense_transition(affinity, offsets, beta):
    """Brute-force dense T = D^-1 W^beta, written independently of the sparse construction."""
    _, h, w = affinity.shape
    weights = np.eye(h * w)
    for p, (dy, dx) in enumerate(offsets):
        for y in range(h):
            for x in range(w):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    i, j = y * w + x, (y + dy) * w + (x + dx)
                    weights[i, j] = weights[j, i] = affinity[p, y, x] ** beta
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.fixture
def small_case():
    rng = np.random.default_rng(0)
    offsets = half_disc_offsets(3)
    affinity = rng.uniform(0.05, 1.0, size=(len(offsets), 6, 7))
    return offsets, affinity, rng


def test_rows_sum_to_one_and_symmetric_weights(small_case):
    offsets, affinity, _ = small_case
    t = transition_matrix(affinity, offsets, beta=4)
    assert isinstance(t, sp.csr_matrix) and t.shape == (42, 42)
    # float64 rows of ≤ 29 terms: ≤ 29 × eps64 ≈ 6e-15 whatever the summation order
    np.testing.assert_allclose(np.asarray(t.sum(axis=1)).ravel(), 1.0, rtol=1e-12)
    dense = t.toarray()
    # D T = W must be symmetric with a unit diagonal.
    weights = dense / np.diag(dense)[:, None]
    np.testing.assert_allclose(weights, weights.T, rtol=1e-10)


def test_zero_outside_radius(small_case):
    offsets, affinity, _ = small_case
    radius = 3
    t = transition_matrix(affinity, offsets, beta=2).tocoo()
    ys, xs = np.divmod(np.arange(42), 7)
    dist2 = (ys[t.row] - ys[t.col]) ** 2 + (xs[t.row] - xs[t.col]) ** 2
    assert np.all(dist2 < radius * radius)
    # And every in-radius pair is present (all affinities are positive here).
    all_pairs = ((ys[:, None] - ys[None]) ** 2 + (xs[:, None] - xs[None]) ** 2) < radius * radius
    assert t.nnz == all_pairs.sum()


def test_sparse_walk_matches_dense_power(small_case):
    offsets, affinity, rng = small_case
    scores = seed_scores(rng.uniform(0, 1, size=(2, 6, 7)), alpha=4)
    t = transition_matrix(affinity, offsets, beta=3)
    sparse = random_walk(scores, t, steps=8)
    dense = (np.linalg.matrix_power(_dense_transition(affinity, offsets, 3), 8) @ scores.reshape(3, -1).T).T
    # the walk runs in float64 and returns float32: one float32 rounding (eps32/2 = 6e-8 relative) dominates;
    # values are ≥ 0.08, so rtol 1e-5 has ~150× headroom, and a wrong power or transpose is off by ≥ 1e-2
    np.testing.assert_allclose(sparse, dense.reshape(scores.shape), rtol=1e-5, atol=1e-6)
    # exact argmax: the top two scores differ by ≥ 4 % here, far more than a float32 rounding
    np.testing.assert_array_equal(sparse.argmax(axis=0), dense.reshape(scores.shape).argmax(axis=0))


def test_partner_outside_values_are_ignored(small_case):
    offsets, affinity, _ = small_case
    ys, xs = np.mgrid[:6, :7]
    outside = np.stack([(ys + dy >= 6) | (xs + dx < 0) | (xs + dx >= 7) for dy, dx in offsets])
    noisy = transition_matrix(np.where(outside, 123.0, affinity), offsets, 2)
    clean = transition_matrix(np.where(outside, 0.0, affinity), offsets, 2)
    np.testing.assert_array_equal(noisy.toarray(), clean.toarray())


def test_full_disc_offsets_rejected(small_case):
    _, affinity, _ = small_case
    with pytest.raises(ValueError, match="half-disc"):
        transition_matrix(affinity[:2], [(0, 1), (0, -1)], beta=1)


def test_seed_scores_background_first():
    cams = np.array([[[0.0, 0.5]], [[0.25, 1.0]]], dtype=np.float32)
    scores = seed_scores(cams, alpha=2)
    np.testing.assert_allclose(scores[0], [[0.75**2, 0.0]])
    np.testing.assert_array_equal(scores[1:], cams)
    empty = seed_scores(np.zeros((0, 2, 3)), alpha=16)
    assert empty.shape == (1, 2, 3) and np.all(empty == 1)


def test_walk_spreads_seed_over_its_region_only():
    # Two regions (left columns 0-5, right 6-11) with affinity 1 inside and ~0 across.
    h, w = 8, 12
    offsets = half_disc_offsets(3)
    region = np.arange(w)[None].repeat(h, 0) >= 6
    affinity = np.empty((len(offsets), h, w))
    for p, (dy, dx) in enumerate(offsets):
        partner = np.roll(np.roll(region, -dy, 0), -dx, 1)
        affinity[p] = np.where(partner == region, 1.0, 1e-3)
    cams = np.zeros((1, h, w), np.float32)
    cams[0, :, :4] = 1.0  # the seed covers 2/3 of the left region; the rest starts as background
    mask = refine(cams, [7], affinity, offsets, RandomWalkConfig(beta=8, steps=64, alpha=4, peak_fraction=0.0), out_size=(h * 2, w * 2))
    assert mask.dtype == np.uint8 and mask.shape == (16, 24)
    assert set(np.unique(mask)) == {0, 7}
    assert np.all(mask[:, :10] == 7)  # the whole left region (away from the boundary)
    assert np.all(mask[:, 14:] == 0)  # the right region stays background


def test_refine_without_walk_is_the_seed_argmax_and_empty_is_background():
    offsets = half_disc_offsets(2)
    affinity = np.ones((len(offsets), 4, 4))
    cams = np.zeros((2, 4, 4), np.float32)
    cams[0, :2, :2] = 1.0
    cams[1, 2:, 2:] = 1.0
    mask = refine(cams, [3, 9], affinity, offsets, RandomWalkConfig(beta=1, steps=0, alpha=1, peak_fraction=0.0), out_size=(4, 4))
    expected = np.zeros((4, 4), np.uint8)
    expected[:2, :2] = 3
    expected[2:, 2:] = 9
    np.testing.assert_array_equal(mask, expected)
    empty = refine(np.zeros((0, 4, 4)), [], affinity, offsets, RandomWalkConfig(beta=1, steps=3, alpha=1, peak_fraction=0.0), out_size=(5, 6))
    assert empty.shape == (5, 6) and not empty.any()


def test_walk_reads_seeds_calibrated_by_their_top_pixels():
    # An object (4 x 4 of an 8 x 8 grid) whose seed is 0.3 but for one token at 1.0: divided by
    # its single maximum, background (1 - 0.3) ** 1 beats it everywhere but on that token;
    # divided by the mean of its top quarter (the object's 16 tokens, 0.34) it holds the object.
    offsets = half_disc_offsets(2)
    affinity = np.ones((len(offsets), 8, 8))
    cams = np.zeros((1, 8, 8), np.float32)
    cams[0, 2:6, 2:6] = 0.3
    cams[0, 2, 2] = 1.0
    single = refine(cams, [5], affinity, offsets, RandomWalkConfig(beta=1, steps=0, alpha=1, peak_fraction=0.0), out_size=(8, 8))
    calibrated = refine(cams, [5], affinity, offsets, RandomWalkConfig(beta=1, steps=0, alpha=1, peak_fraction=0.25), out_size=(8, 8))
    assert np.argwhere(single == 5).tolist() == [[2, 2]]
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 2:6] = 5
    np.testing.assert_array_equal(calibrated, expected)
