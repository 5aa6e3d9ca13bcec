"""Code deps: dvc.yaml lists exactly each stage's import closure, and the derivation is right."""
from pathlib import Path

import yaml

from stages.code_deps import ROOT, closure, derived_deps, rewrite_dvc_yaml, stage_code_deps
from stages.stage_list import STAGE_MODULES


def _declared_code_deps() -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: sorted(d for d in stage.get("deps", []) if d.endswith(".py")) for name, stage in stages.items()}


def test_dvc_yaml_declares_each_stages_import_closure():
    declared = _declared_code_deps()
    assert set(declared) == set(STAGE_MODULES)
    for stage, wanted in derived_deps().items():
        assert declared[stage] == wanted, f"{stage}: dvc.yaml code deps differ from the import closure; run `wsss code-deps`"


def test_closures_are_scoped_to_each_stages_job():
    deps = derived_deps()
    users = {stage for stage, files in deps.items() if "pipeline/evaluation.py" in files}
    assert users == {"evaluate", "evaluate_seg"}  # the pseudo-masks' scores and the segmenter's
    assert "pipeline/explain/methods.py" not in deps["train_seg"] and "pipeline/explain/methods.py" not in deps["evaluate_seg"]
    assert "pipeline/seeds.py" not in deps["evaluate_seg"]  # post-processing needs the dense CRF, not the seeds
    assert "pipeline/segmentation/infer.py" not in deps["train_seg"]  # training does not run test-time inference
    assert "pipeline/random_walk.py" not in deps["crf_labels"]
    assert "pipeline/explain/methods.py" not in deps["crf_labels"]  # reading seeds does not need the explainer
    assert "pipeline/classifier.py" not in deps["random_walk"]  # preprocessing is not classifier training
    for files in deps.values():
        assert "stages/cli.py" not in files and "stages/stage_list.py" not in files
        assert "stages/params.py" in files and "stages/common.py" in files


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_closure_follows_lazy_relative_and_package_imports_but_not_type_checking(tmp_path):
    _write(tmp_path, {
        "pipeline/__init__.py": "",
        "pipeline/a.py": "from pipeline import b\n\ndef f():\n    from .sub import c  # lazy and relative\n",
        "pipeline/b.py": "import numpy\n",
        "pipeline/sub/__init__.py": "",
        "pipeline/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline import hidden\nelse:\n    import pipeline.d\n",
        "pipeline/d.py": "",
        "pipeline/hidden.py": "",
        "pipeline/unused.py": "",
    })
    assert closure("pipeline.a", tmp_path) == {"pipeline", "pipeline.a", "pipeline.b", "pipeline.sub", "pipeline.sub.c", "pipeline.d"}


def test_rewrite_replaces_only_code_entries_and_adds_missing_deps_keys():
    text = (
        "stages:\n"
        "  one:\n"
        "    cmd: wsss one\n"
        "    params:\n"
        "      - one\n"
        "  two:\n"
        "    cmd: wsss two\n"
        "    deps:\n"
        "      - data/x.zarr\n"
        "      - pipeline/old.py\n"
        "    outs:\n"
        "      - data/y.zarr\n"
    )
    out = rewrite_dvc_yaml(text, {"one": ["pipeline/a.py"], "two": ["pipeline/b.py", "stages/two.py"]})
    parsed = yaml.safe_load(out)["stages"]
    assert parsed["one"]["deps"] == ["pipeline/a.py"] and parsed["one"]["params"] == ["one"]
    assert parsed["two"]["deps"] == ["data/x.zarr", "pipeline/b.py", "stages/two.py"]
    assert parsed["two"]["outs"] == ["data/y.zarr"]
    assert rewrite_dvc_yaml(out, {"one": ["pipeline/a.py"], "two": ["pipeline/b.py", "stages/two.py"]}) == out


def test_each_stage_runs_its_own_module():
    for stage, module in STAGE_MODULES.items():
        assert module.replace(".", "/") + ".py" in stage_code_deps(stage)
