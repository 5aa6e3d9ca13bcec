from pathlib import Path

import pytest
import yaml

from pipeline.classifier.train import ClassifierConfig
from stages.check import SECTIONS
from stages.runner import params as P

ROOT = Path(__file__).resolve().parents[1]


def _params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(
    "name, cls",
    [(name, cls) for name, cls in SECTIONS.items()],
)
def test_project_params_validate(name, cls):
    P.section(_params(), name, cls)


def test_typo_is_named():
    params = _params()
    params["train_cls"]["learning_rate"] = params["train_cls"].pop("lr")
    with pytest.raises(P.ParamsError, match=r"unknown key 'train_cls.learning_rate'"):
        P.section(params, "train_cls", ClassifierConfig)


def test_missing_key_is_named():
    params = _params()
    del params["train_cls"]["epochs"]
    with pytest.raises(P.ParamsError, match=r"'train_cls.epochs' is missing"):
        P.section(params, "train_cls", ClassifierConfig)


@pytest.mark.parametrize(
    "key, bad, message",
    [
        ("epochs", "10", "must be int"),
        ("epochs", 0, "out of range"),
        ("lr", "fast", "must be float"),
        ("hflip", "yes", "must be bool"),
        ("optimizer", "adam", "'sgd' | 'adamw'"),
        ("pretrained", 3, "bool or str"),
    ],
)
def test_wrong_type_or_range_is_named(key, bad, message):
    params = _params()
    params["train_cls"][key] = bad
    with pytest.raises(P.ParamsError, match=rf"train_cls.{key}.*{message}|{message}.*train_cls.{key}"):
        P.section(params, "train_cls", ClassifierConfig)


def test_nested_section_errors_carry_the_full_path():
    params = _params()
    params["train_cls"]["demo_hybrid"]["stem_channels"] = [32, "x"]
    with pytest.raises(P.ParamsError, match=r"train_cls.demo_hybrid.stem_channels\[1\]"):
        P.section(params, "train_cls", ClassifierConfig)


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(P.ParamsError, match="--params"):
        P.load(tmp_path / "nope.yaml")


def test_a_bare_off_is_off_as_dvc_exp_run_writes_it():
    # `dvc exp run -S key=value` rewrites params.yaml with `amp: off` unquoted, which YAML 1.1 reads as false.
    params = yaml.safe_load((ROOT / "params.yaml").read_text().replace('amp: "off"', "amp: off"))
    assert params["train_cls"]["amp"] is False
    assert P.section(params, "train_cls", ClassifierConfig).amp == "off"
    params["train_cls"]["amp"] = True  # true is no precision
    with pytest.raises(P.ParamsError, match="train_cls.amp"):
        P.section(params, "train_cls", ClassifierConfig)
