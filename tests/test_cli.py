"""The `wsss` command line: stage list, dvc.yaml wiring, and clear messages for bad input."""
import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from stages.cli import STAGES, app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_help_lists_every_dvc_stage_with_a_description():
    # The expected names come from dvc.yaml and the stage modules on disk, not from the list
    # that registered the commands.
    on_disk = {path.stem for path in (ROOT / "stages").glob("*.py") if re.search(r"^def run\(stage: Stage\)", path.read_text(), re.M)}
    assert on_disk == set(_dvc_stages())
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in on_disk:
        line = next((line for line in result.output.splitlines() if re.match(rf"^[│|]?\s+{name}\s", line)), None)
        assert line is not None, f"{name} missing from wsss --help"
        assert len(line.split(name, 1)[1].strip(" │|")) > 10, f"{name} has no description in wsss --help"


def test_every_stage_reads_the_params_file_it_is_given(tmp_path):
    """Each stage stops on an unknown key in its own section of the file passed with --params,
    naming that file: the stage reads its config from there, not from ./params.yaml."""
    for name, entry in _dvc_stages().items():
        section = next(key for key in entry["params"] if key != "device")
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params[section]["no_such_knob"] = 1
        other = tmp_path / f"{name}.yaml"
        other.write_text(yaml.safe_dump(params))
        result = runner.invoke(app, [name, "--params", str(other)])
        assert result.exit_code == 2, (name, result.output)
        assert f"{other}: " in result.output and f"{section}.no_such_knob" in result.output, (name, result.output)


def _keys_read(module_name: str, cpu_only: bool) -> set[str]:
    """Top-level params keys a stage module reads (sections and scalars), from its source."""
    source = (ROOT / (module_name.replace(".", "/") + ".py")).read_text()
    sections = set(re.findall(r'stage\.section\("([a-z_]+)"', source))
    # Joining the process group resolves the device, except for a stage that never uses a GPU.
    joins = any(use in source for use in ("stage.device", "stage.join()", "stage.group", "stage.sharded(", "stage.training("))
    return sections | ({"device"} if joins and not cpu_only else set()) | ({"storage"} if "stage.sharded(" in source else set())


def test_dvc_yaml_runs_each_stage_through_wsss_and_declares_exactly_what_it_reads():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    specs = {spec.name: spec for spec in STAGES}
    assert set(dvc) == set(specs), "every dvc.yaml stage is a wsss command and vice versa"
    for name, stage in dvc.items():
        assert stage["cmd"] == f"wsss {name}"
        assert set(stage.get("params", [])) == _keys_read(specs[name].module, specs[name].cpu_only), name
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
