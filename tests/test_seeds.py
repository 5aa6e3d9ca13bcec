"""Seed maps: normalisation, scale/flip averaging, and the checks between stores."""
import numpy as np
import pytest
import torch

from pipeline.classifier.model import DemoHybridConfig, build_classifier
from pipeline.core.artifacts import Artifact, ArtifactWriter
from pipeline.core.errors import InputError
from pipeline.data.index import DatasetIndex
from pipeline.seeds.relevance import CamsConfig, multiscale_relevance, normalise_by_max, plan_scales, require_method
from pipeline.seeds.stored import cam_positions, present_class_maps
from pipeline.sources.build_index import DatasetConfig, write_index
from pipeline.sources.synthetic import SyntheticConfig, generate
from tests.configs import project_config

TINY = DemoHybridConfig(stem_channels=(8, 16), embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, patch_size=2)


def test_normalise_by_max_clips_negatives_and_keeps_zero_maps():
    maps = np.array([[[-1.0, 2.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = normalise_by_max(maps)
    assert out[0].tolist() == [[0.0, 1.0], [0.5, 0.0]]
    assert out[1].tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_present_class_maps_returns_label_values():
    cams = np.arange(3 * 2 * 2, dtype=np.float16).reshape(3, 2, 2)
    maps, labels = present_class_maps(cams, np.array([0, 1, 1]))
    assert labels.tolist() == [2, 3] and maps.shape == (2, 2, 2)


def test_flip_average_of_a_mirror_image_is_the_mirror_of_the_average():
    torch.manual_seed(0)
    model = build_classifier("demo_hybrid", 3, 32, demo_config=TINY, dynamic_img_size=True).eval()
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    classes = torch.tensor([0, 2])
    config = project_config("cams", CamsConfig, method="transformer_attribution", scales=[1.0, 1.5], flip=True, start_layer=1)
    plans = plan_scales(model, 32, 8, config, budget=2**40)
    a = multiscale_relevance(model, images, classes, (4, 4), 8, config, plans)
    b = multiscale_relevance(model, images.flip(-1), classes, (4, 4), 8, config, plans)
    assert a.shape == (2, 4, 4)
    # float32 (normalise casts): the 1.5× resize and the 4-term average round differently for the mirror, and the
    # network amplifies that (float32 vs float64 maps: 1.6e-6 of the max); 1e-4 of each map's max is ~60× that,
    # while a map not mirrored back is off by ~0.5 of its max. (Maps are ~1e-4 and ~5e-6: no fixed atol fits.)
    for got, want in zip(a, b.flip(-1)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.abs().max()))


def test_lrp_on_a_hybrid_is_refused_naming_the_param():
    model = build_classifier("demo_hybrid", 3, 32, demo_config=TINY)
    with pytest.raises(InputError, match="cams.method=lrp"):
        require_method(model, "lrp", "cams.method")


def _stores(tmp_path, cam_ids, class_names=None):
    generate(tmp_path / "voc", project_config("synthetic", SyntheticConfig, num_train=4, num_val=2, image_size=32, num_classes=3, seed=0))
    write_index(tmp_path / "dataset.zarr", project_config("dataset", DatasetConfig, root=str(tmp_path / "voc")))
    index = DatasetIndex(tmp_path / "dataset.zarr")
    where = {i: k for k, i in enumerate(index.ids)}
    attrs = {"class_names": class_names or index.class_names}
    with ArtifactWriter(tmp_path / "cams.zarr", "cams", cam_ids, attrs) as out:
        out.create("cams", (3, 2, 2), "float16")
        out.create("labels", (3,), "uint8")
        for row, image_id in enumerate(cam_ids):
            out.write("cams", row, np.zeros((3, 2, 2)))
            out.write("labels", row, index.labels[where[image_id]] if image_id in where else np.zeros(3))
    return index, Artifact(tmp_path / "cams.zarr", "cams")


def test_cam_store_matching_the_dataset_gives_positions(tmp_path):
    index, cams = _stores(tmp_path, ["syn_000001", "syn_000003"])
    assert cam_positions(index, cams) == [1, 3]


def test_cam_store_with_other_classes_or_ids_is_refused(tmp_path):
    index, cams = _stores(tmp_path, ["syn_000001"], class_names=["a", "b", "c"])
    with pytest.raises(InputError, match="rerun cams"):
        cam_positions(index, cams)
    index, cams = _stores(tmp_path / "other", ["syn_009999"])
    with pytest.raises(InputError, match="not in"):
        cam_positions(index, cams)
