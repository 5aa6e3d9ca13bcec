"""Code deps: dvc.yaml lists exactly each stage's import closure, and the derivation is right."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.code_deps import ROOT, closure, dep_entry, derived_deps, is_code_dep, rewrite_dvc_yaml, stage_code_files
from stages.stage_list import STAGE_MODULES


def _declared_code_deps() -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: sorted(d for d in stage.get("deps", []) if is_code_dep(d)) for name, stage in stages.items()}


def test_dvc_yaml_declares_the_folders_and_files_covering_each_stages_closure():
    declared = _declared_code_deps()
    assert set(declared) == set(STAGE_MODULES)
    for stage, wanted in derived_deps().items():
        assert declared[stage] == wanted, f"{stage}: dvc.yaml code deps differ from the import closure; run `wsss code-deps`"


def test_every_file_a_stage_runs_is_under_one_of_its_declared_deps():
    for stage, entries in _declared_code_deps().items():
        for path in stage_code_files(stage):
            assert any(path == e or path.startswith(e + "/") for e in entries), f"{stage} runs {path} but dvc.yaml does not cover it"


def test_closures_are_scoped_to_each_stages_job():
    files = {stage: stage_code_files(stage) for stage in STAGE_MODULES}
    users = {stage for stage, paths in files.items() if "pipeline/evaluation/pseudo_labels.py" in paths}
    assert users == {"evaluate", "evaluate_seg"}  # the pseudo-masks' scores and the segmenter's
    assert "pipeline/explain/methods.py" not in files["train_seg"] and "pipeline/explain/methods.py" not in files["evaluate_seg"]
    assert "pipeline/seeds/stored.py" not in files["evaluate_seg"]  # post-processing needs the dense CRF, not the seeds
    assert "pipeline/segmentation/infer.py" not in files["train_seg"]  # training does not run test-time inference
    assert "pipeline/refine/random_walk.py" not in files["crf_labels"]
    assert "pipeline/explain/methods.py" not in files["crf_labels"]  # reading seeds does not need the explainer
    assert "pipeline/classifier/train.py" not in files["random_walk"]  # preprocessing is not classifier training
    # Only the dataset, masks and synthetic stages read a source; every other stage reads the stores.
    assert {stage for stage, paths in files.items() if any(p.startswith("pipeline/sources/") for p in paths)} == {"synthetic", "dataset", "masks"}
    for paths in files.values():
        assert "stages/cli.py" not in paths and "stages/stage_list.py" not in paths
        assert "stages/runner/params.py" in paths and "stages/runner/stage.py" in paths


# One fresh process for all stages: before each stage module it drops every project module,
# so Python imports that stage's project code from nothing; torch and timm stay loaded, which
# changes nothing here (they never import project code) and saves a start-up per stage.
_PROBE = """
import json, sys, importlib
loaded = {}
for module in sys.argv[1:]:
    for name in [m for m in sys.modules if m.split('.')[0] in ('pipeline', 'stages')]:
        del sys.modules[name]
    importlib.import_module(module)
    loaded[module] = sorted(m for m in sys.modules if m.split('.')[0] in ('pipeline', 'stages'))
print(json.dumps(loaded))
"""


@pytest.mark.slow  # a python subprocess that imports torch and timm
def test_every_module_a_stage_loads_is_in_its_closure():
    """The static closure against what Python really imports: a missed import form (relative,
    `from package import module`, a package __init__) would leave a loaded module out."""
    modules = sorted(set(STAGE_MODULES.values()))
    loaded = json.loads(subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    for stage, module in STAGE_MODULES.items():
        missing = set(loaded[module]) - closure(module)
        assert not missing, f"{stage}: importing {module} loads {sorted(missing)}, which its closure lacks"


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


def test_rewrite_keeps_flow_lists_quoted_data_deps_and_other_keys():
    text = (
        "stages:\n"
        "  two:\n"
        "    cmd: wsss two\n"
        '    deps: [data/x.zarr, "${dataset.root}",\n'
        "           pipeline/old, stages/two.py]\n"
        "    outs: [data/y.zarr]\n"
    )
    wide = [f"pipeline/group{i}" for i in range(20)]
    out = rewrite_dvc_yaml(text, {"two": wide})
    parsed = yaml.safe_load(out)["stages"]["two"]
    assert parsed["deps"] == ["data/x.zarr", "${dataset.root}", *wide] and parsed["outs"] == ["data/y.zarr"]
    assert max(len(line) for line in out.splitlines()) <= 120  # long lists wrap
    assert rewrite_dvc_yaml(out, {"two": wide}) == out


def test_a_file_is_covered_by_its_group_folder_and_a_top_level_module_by_itself():
    assert dep_entry("pipeline/refine/affinity/net.py") == "pipeline/refine"
    assert dep_entry("stages/runner/stage.py") == "stages/runner"
    assert dep_entry("stages/cams.py") == "stages/cams.py" and dep_entry("pipeline/__init__.py") == "pipeline/__init__.py"


def test_only_the_dataset_stage_lists_the_dataset_folder():
    """DVC looks up every file of a listed folder once per stage listing it, on each `dvc status`
    (at COCO's 82k images, about 10 s a listing); the index and the mask digests stand for the files."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [name for name, stage in stages.items() if "${dataset.root}" in stage.get("deps", [])] == ["dataset"]
