"""The `wsss` command line: stage list, dvc.yaml wiring, and clear messages for bad input."""
import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from stages.cli import STAGES, app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_help_lists_every_stage_with_a_description():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name, _, description in STAGES:
        assert name in result.output
        assert description.split()[0] in result.output


def test_every_stage_documents_its_params_option():
    for name, _, _ in STAGES:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "--params" in result.output


def _keys_read(module_name: str) -> set[str]:
    """Top-level params keys a stage module reads (sections and scalars), from its source."""
    source = (ROOT / (module_name.replace(".", "/") + ".py")).read_text()
    sections = set(re.findall(r'params\.section\("([a-z_]+)"', source))
    reads_device = "params.device()" in source or "params.join()" in source  # join(cpu_only=True) does not
    return sections | ({"device"} if reads_device else set()) | ({"storage"} if "params.shard_size()" in source else set())


def test_dvc_yaml_runs_each_stage_through_wsss_and_declares_exactly_what_it_reads():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    modules = {name: module for name, module, _ in STAGES if name in dvc}
    assert set(dvc) == set(modules), "every dvc.yaml stage is a wsss command and vice versa"
    for name, stage in dvc.items():
        assert stage["cmd"] == f"wsss {name}"
        assert set(stage.get("params", [])) == _keys_read(modules[name]), name
        # The process count is a hardware choice like the thread count: editing it reruns nothing.
        assert "distributed" not in stage.get("params", []), name


def test_typo_in_params_stops_with_the_key_named(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synthetic"]["num_trian"] = params["synthetic"].pop("num_train")
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    result = runner.invoke(app, ["synthetic", "--params", str(bad)])
    assert result.exit_code == 2
    assert "synthetic.num_trian" in result.output
    assert "Traceback" not in result.output


def test_missing_dataset_root_stops_before_any_work(tmp_path, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"]["root"] = str(tmp_path / "no_such_voc")
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["dataset", "--params", str(bad)])
    assert result.exit_code == 2
    assert "no_such_voc" in result.output
    assert not (tmp_path / "data" / "dataset.zarr").exists()


def test_missing_upstream_artifact_names_the_stage_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train_cls", "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 2
    assert "dataset.zarr" in result.output and "dvc repro" in result.output


def test_unknown_device_stops_with_the_key_named(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["device"] = "gpu0"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    result = runner.invoke(app, ["train_cls", "--params", str(bad)])
    assert result.exit_code == 2
    assert "device: 'gpu0'" in result.output and "cuda:N" in result.output
    assert "Traceback" not in result.output
