"""One registry of explanation methods: a registered function is known everywhere, with no other wiring."""
import pytest
import torch
from typer.testing import CliRunner

from pipeline.classifier.model import build_classifier
from pipeline.core.config import ConfigError
from pipeline.evaluation.explanations import ExplainEvalConfig
from pipeline.explain import METHODS, explain, register_method
from pipeline.seeds.relevance import CamsConfig, require_method
from stages.cli import app
from tests.configs import project_config


@pytest.fixture()
def toy_method():
    @register_method()
    def centre_only(model, images, class_ids, start_layer):
        """Test method: one at the centre token."""
        gh, gw = model.patch_embed.grid_size
        maps = torch.zeros(images.shape[0], gh, gw, dtype=images.dtype)
        maps[:, gh // 2, gw // 2] = 1
        return maps

    yield "centre_only"
    del METHODS["centre_only"]


def test_a_registered_method_is_known_everywhere(toy_method):
    assert project_config("cams", CamsConfig, method=toy_method).method == toy_method
    assert toy_method in project_config("explain_eval", ExplainEvalConfig, methods=[toy_method]).methods
    model = build_classifier("vit_tiny_patch16_224", 3, 32).eval()
    require_method(model, toy_method, "cams.method")
    maps = explain(model, torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]), method=toy_method)
    assert maps.shape == (2, 2, 2) and maps[:, 1, 1].tolist() == [1.0, 1.0]
    listing = CliRunner().invoke(app, ["methods"]).output
    assert "centre_only" in listing and "one at the centre token" in listing


def test_an_unregistered_name_is_refused_with_the_registered_ones():
    with pytest.raises(ConfigError, match=r"'cams.method' must be 'transformer_attribution' \| .*'generic_attention', got 'gradcamm'"):
        project_config("cams", CamsConfig, method="gradcamm")
    with pytest.raises(ValueError, match="unknown method 'gradcamm'"):
        explain(build_classifier("vit_tiny_patch16_224", 3, 32).eval(), torch.zeros(1, 3, 32, 32), torch.tensor([0]), method="gradcamm")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_method()(METHODS["rollout"].function)
