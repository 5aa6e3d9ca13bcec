"""Memory of explanations and the batch planner: peaks measured with pipeline.core.memory.TensorMemory
(live bytes of the tensor storages an operation leaves behind), on the CPU and on the meta device."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from pipeline.core.errors import InputError
from pipeline.core.memory import TensorMemory, largest_batch, on_meta, peak_bytes
from pipeline.explain import METHODS, explain
from pipeline.explain.planning import explain_planned, plan_explanations
from pipeline.seeds.relevance import CamsConfig, multiscale_relevance, plan_scales, scaled_size

torch.set_num_threads(1)

HEADS, GRID = 4, 24
TOKENS = GRID * GRID + 1
ATTENTION_BYTES = HEADS * TOKENS * TOKENS * 4  # one float32 attention map of one image, all heads


def vit(depth: int, dtype: torch.dtype = torch.float32) -> VisionTransformer:
    """Attention-heavy on purpose (577 tokens, width 32): one attention map outweighs a block's
    token tensors about 70 times, so peaks count attention maps."""
    torch.manual_seed(depth)
    model = VisionTransformer(img_size=GRID * 4, patch_size=4, embed_dim=32, depth=depth, num_heads=HEADS, num_classes=5,
                              dynamic_img_size=True)
    return model.to(dtype).eval()


def measured_peak(model: VisionTransformer, method: str, recompute: bool) -> int:
    images = torch.randn(1, 3, GRID * 4, GRID * 4, generator=torch.Generator().manual_seed(0))
    return peak_bytes(lambda: explain(model, images, torch.tensor([2]), method=method, start_layer=0, recompute=recompute))


def test_tensor_memory_counts_live_storages_once() -> None:
    with TensorMemory() as memory:
        a = torch.ones(1000)                  # 4000 bytes
        view = a.view(10, 100)                # same storage: not counted again
        b = a + 1                             # 8000 live
        del a, view
        c = b * 2                             # a is gone: 8000 live again
        c.add_(1)                             # in place: nothing new
    assert memory.peak == 8000
    del b, c


# Each method's peak as the model gets 4 blocks deeper (3 -> 7: the bottom block of a chain takes
# the cheap path, so both depths have the same per-block working set). Before the top-down sweep,
# every traced block kept its attention map, the logits Q·Kᵀ and (with gradients) the softmax
# output autograd saves, and all attention gradients were taken at once: 2-3 maps per block.
MAPS_PER_ADDED_BLOCK = {
    "transformer_attribution": 1.5,  # autograd keeps each block's softmax output until its turn
    "generic_attention": 1.5,
    "lrp": 1.5,                      # no gradients: the kept trace's attention map
    "rollout": 0.5,                  # a head mean (1/heads of a map) per block, nothing else
    "raw_attention": 0.05,           # the last block alone, whatever the depth
    "gradcam": 0.05,
    "partial_lrp": 0.05,
}
MAPS_FOR_FOUR_RECOMPUTED_BLOCKS = 0.5  # only block inputs (tokens × width) stay behind


@pytest.mark.parametrize("method", list(METHODS))
def test_peak_grows_by_at_most_one_attention_map_per_block(method: str) -> None:
    assert set(MAPS_PER_ADDED_BLOCK) == set(METHODS)
    shallow, deep = vit(3), vit(7)
    kept = measured_peak(deep, method, recompute=False) - measured_peak(shallow, method, recompute=False)
    assert kept <= 4 * MAPS_PER_ADDED_BLOCK[method] * ATTENTION_BYTES, f"{kept / ATTENTION_BYTES:.2f} maps for 4 more blocks"
    if METHODS[method].recomputable:
        rebuilt = measured_peak(deep, method, recompute=True) - measured_peak(shallow, method, recompute=True)
        assert rebuilt <= MAPS_FOR_FOUR_RECOMPUTED_BLOCKS * ATTENTION_BYTES, f"{rebuilt / ATTENTION_BYTES:.2f} maps for 4 more blocks"


@pytest.mark.parametrize("method", ["transformer_attribution", "generic_attention", "lrp"])
def test_recompute_gives_the_same_bytes_and_a_lower_peak(method: str) -> None:
    model = vit(4)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    class_ids = torch.tensor([0, 4, 2])
    kept = explain(model, images, class_ids, method=method, recompute=False)
    rebuilt = explain(model, images, class_ids, method=method, recompute=True)
    assert torch.equal(kept, rebuilt)
    assert measured_peak(model, method, recompute=True) < measured_peak(model, method, recompute=False)


@pytest.mark.parametrize("method", list(METHODS))
def test_dry_run_on_meta_never_reads_low(method: str) -> None:
    """The planner's premise: a meta-device run allocates at least what the CPU run does.

    Where our code traces every block (start_layer 0, chaining methods) it is within 5%: some
    meta kernels make a fresh output where the CPU kernel reuses a buffer (up to 1.5% here).
    Blocks that run as timm's own (below start_layer, or all but the last for the one-block
    methods) use fused attention on the CPU, which never holds the N×N map; on meta it does,
    so the dry run reads high there, the safe way.
    """
    model = vit(3)
    images = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    meta_model, meta_images = on_meta(model), torch.empty_like(images, device="meta")
    class_ids = torch.tensor([1, 3])
    for start_layer in (0, 1):
        for recompute in (False, True):
            def run(m: VisionTransformer, x: torch.Tensor) -> int:
                return peak_bytes(lambda: explain(m, x, class_ids, method=method, start_layer=start_layer, recompute=recompute))

            real, dry = run(model, images), run(meta_model, meta_images)
            assert real <= dry
            if start_layer == 0 and method in ("transformer_attribution", "generic_attention", "lrp", "rollout"):
                assert dry <= 1.05 * real


def test_on_meta_leaves_the_model_alone() -> None:
    model = vit(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    meta = on_meta(model)
    assert all(t.device.type == "meta" for t in list(meta.parameters()) + list(meta.buffers()))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in meta.parameters()] == [p.requires_grad for p in model.parameters()]


def test_largest_batch_follows_the_measured_line() -> None:
    calls: list[int] = []

    def peak(batch: int) -> int:
        calls.append(batch)
        return 100 + 30 * batch

    assert largest_batch(peak, wanted=16, budget=100 + 30 * 5) == 5
    assert largest_batch(peak, wanted=3, budget=10_000) == 3
    assert largest_batch(peak, wanted=16, budget=129) == 0
    assert largest_batch(lambda b: 100 + 30 * b + (50 if b > 3 else 0), wanted=16, budget=100 + 30 * 5) == 3  # steps down


def test_plan_recomputes_only_when_that_fits_a_larger_batch() -> None:
    model = vit(4)
    one_kept = measured_peak(model, "transformer_attribution", recompute=False)
    side = GRID * 4
    roomy = plan_explanations(model, "transformer_attribution", 0, side, 4, budget=100 * one_kept, what="test")
    assert (roomy.batch, roomy.recompute) == (4, False)
    tight = plan_explanations(model, "transformer_attribution", 0, side, 4, budget=one_kept - 1, what="test")
    assert tight.recompute and tight.batch >= 1 and tight.peak <= one_kept - 1
    rollout = plan_explanations(model, "rollout", 0, side, 4, budget=one_kept - 1, what="test")
    assert not rollout.recompute  # nothing to recompute: it never keeps a block's trace


def _cams_setup(dtype: torch.dtype) -> tuple[VisionTransformer, CamsConfig, torch.Tensor, torch.Tensor]:
    model = vit(3, dtype)
    config = CamsConfig(method="transformer_attribution", start_layer=0, splits=["train"], image_size=32,
                        scales=[0.5, 1.0, 2.0], flip=True, batch_size=16)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (10, 3, 32, 32), dtype=np.uint8))
    class_ids = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    return model, config, images, class_ids


def test_a_budget_for_one_pair_at_the_top_scale_changes_only_rounding() -> None:
    # float64: the batch split only reorders BLAS summations (< 1e-12 of the max); in float32 it can
    # move last bits, which is why memory.budget_gib is a param of cams and explain_eval
    model, config, images, class_ids = _cams_setup(torch.float64)
    top = scaled_size(32, 2.0, 4)
    one_at_top = plan_explanations(model, config.method, 0, top, 1, budget=10**12, what="test").peak
    tight = plan_scales(model, 32, 4, config, budget=one_at_top)
    assert [plan.batch for plan in tight][-1] == 1 and tight[0].batch > 1
    roomy = plan_scales(model, 32, 4, config, budget=10**12)
    assert [plan.batch for plan in roomy] == [16, 16, 16]
    expected = multiscale_relevance(model, images, class_ids, (8, 8), 4, config, roomy)
    got = multiscale_relevance(model, images, class_ids, (8, 8), 4, config, tight)
    assert (got - expected).abs().max() <= 1e-12 * expected.abs().max()


def test_a_budget_too_small_for_one_pair_names_scale_side_and_need() -> None:
    model, config, _, _ = _cams_setup(torch.float32)
    with pytest.raises(InputError, match=r"cams at scale 0\.5: explaining one 16×16 px input .* needs [0-9.]+ GiB .* memory\.budget_gib"):
        plan_scales(model, 32, 4, config, budget=1000)


def test_planned_explanations_are_the_concatenated_batches() -> None:
    model = vit(2)
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    class_ids = torch.tensor([0, 1, 2, 3, 4])
    plan = plan_explanations(model, "generic_attention", 0, 64, 2, budget=10**12, what="test")
    assert plan.batch == 2
    expected = torch.cat([explain(model, images[i:i + 2], class_ids[i:i + 2], method="generic_attention", start_layer=0)
                          for i in range(0, 5, 2)])
    assert torch.equal(explain_planned(model, images, class_ids, "generic_attention", 0, plan), expected)
