"""Stages as several processes (torchrun, gloo on CPU) and resumed after a SIGKILL.

Every test works in its own copy of the reproduced tiny project and runs `wsss <stage>` as a
user would. One and two processes must do the same float operations in the same order wherever
the work is per image, so both use the same thread count: the pinned numerics' two threads on
an AVX2 CPU, and elsewhere the one thread `_env` asks for.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BIN

from pipeline.core.artifacts import Artifact
from pipeline.data.index import DatasetIndex
from stages.preset import merged

pytestmark = pytest.mark.slow  # torchrun / dvc repro end to end

SHARD = 8  # a multiple of cams.batch_size (8 in the tiny params) and of random_walk's batch: 3 shards of 24 images
STORES = {"cams": ["data/cams.zarr"], "crf_labels": ["data/crf_labels.zarr"], "random_walk": ["data/refined.zarr", "data/pseudo_labels"]}


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _copy(source: Path, dest: Path, **params) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    _set(dest, **params)
    return dest


def _set(project: Path, **params) -> None:
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(merged(yaml.safe_load(path.read_text()), params), sort_keys=False))


def _wsss(project: Path, stage: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(["wsss", stage], cwd=project, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"wsss {stage} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def _digest(*paths: Path) -> dict[str, str]:
    """md5 of every file under the paths, by relative name."""
    out = {}
    for root in paths:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            out[f"{root.name}/{file.relative_to(root)}"] = hashlib.md5(file.read_bytes()).hexdigest()
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def one_process(reproduced_project, tmp_path_factory) -> Path:
    """The per-image stages rerun in one process with small shards: the reference stores."""
    project = _copy(reproduced_project, tmp_path_factory.mktemp("one") / "p", storage={"shard_size": SHARD},
                    distributed={"nproc_per_node": 1})
    for stage in STORES:
        _wsss(project, stage)
    return project


@pytest.mark.parametrize("stage", list(STORES))
def test_two_processes_write_the_same_bytes_as_one(one_process, tmp_path, stage):
    project = _copy(one_process, tmp_path / "p", distributed={"nproc_per_node": 2})
    _wsss(project, stage)
    timing = yaml.safe_load((project / "metrics/timings" / f"{stage}.json").read_text())
    assert timing["processes"] == 2 and timing["items_per_second"] > 0
    paths = STORES[stage]
    assert _digest(*(project / p for p in paths)) == _digest(*(one_process / p for p in paths))
    assert not any((project / ".staging").rglob("*.json"))  # the staging folder went with the commit


def test_two_nodes_on_localhost_write_the_same_bytes(one_process, tmp_path):
    """`torchrun --nnodes 2 --node-rank i ... --no-python wsss cams` on each "node", as the README says."""
    project = _copy(one_process, tmp_path / "p")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1",
                               "--master-addr=127.0.0.1", f"--master-port={port}", "--no-python", "wsss", "cams"],
                              cwd=project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert _digest(project / "data/cams.zarr") == _digest(one_process / "data/cams.zarr")


def test_ddp_on_train_aff_matches_one_process_with_the_global_batch(reproduced_project, tmp_path):
    """24 images, global batch 8: 3 optimiser steps, 4 images per rank. AffinityNet's backbone
    norms are frozen, so the only difference is float32 summation order in the gradient
    reductions (conv backward, the all-reduce): relative errors near sqrt(n) * 2^-24 for sums
    of n <= 10^4 terms, about 1e-5, carried through 3 momentum steps. 1e-4 of each tensor's
    largest magnitude bounds that; a wrong averaging (a missing world-size factor, a per-rank
    mean) moves the weights by orders of magnitude more, as the check against the start shows."""
    settings = {"train_aff": {"epochs": 1, "batch_size": 8}}
    one = _copy(reproduced_project, tmp_path / "one", distributed={"nproc_per_node": 1}, **settings)
    two = _copy(reproduced_project, tmp_path / "two", distributed={"nproc_per_node": 2}, **settings)
    start = _weights(one / "data/models/affinitynet.pt")  # the reproduced run's: other settings, a different model
    _wsss(one, "train_aff")
    _wsss(two, "train_aff")
    reference, distributed = _weights(one / "data/models/affinitynet.pt"), _weights(two / "data/models/affinitynet.pt")
    moved = 0.0
    for name, value in reference.items():
        if value.is_floating_point():
            scale = value.abs().max().item() or 1.0
            assert (value - distributed[name]).abs().max().item() <= 1e-4 * scale, name
            moved = max(moved, (value - start[name]).abs().max().item() / scale)
    assert moved > 1e-2


def _kill_when(command: list[str], project: Path, done, at_least: int, timeout: float = 300) -> int:
    """Start `command` in its own process group and SIGKILL the group once ``done()`` (a count
    of finished units) reaches ``at_least``; returns ``done()`` after the kill. torchrun's ranks
    live in sessions of their own: they die with it (pipeline.core.distributed asks the kernel so)."""
    process = subprocess.Popen(command, cwd=project, env=_env(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while done() < at_least:
        assert process.poll() is None, "the stage finished before it could be interrupted: give it more work"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return done()


def test_cams_killed_after_some_shards_resumes_to_the_same_bytes(one_process, tmp_path):
    settings = {"storage": {"shard_size": 2}, "cams": {"flip": True}, "distributed": {"nproc_per_node": 2}}  # 12 shards, more work each
    reference = _copy(one_process, tmp_path / "reference", **settings)
    _wsss(reference, "cams")
    project = _copy(one_process, tmp_path / "p", **settings)
    markers = lambda: len(list((project / ".staging/cams").glob("*/cams.zarr/done/*.json")))
    seen = _kill_when(["wsss", "cams"], project, markers, 3)
    rerun = _wsss(project, "cams")
    # Ranks still dying when the count was taken may have finished one more shard each.
    kept = int(re.search(r"cams: resuming, (\d+) of 12 shards already done", rerun.stderr).group(1))
    assert 3 <= seen <= kept < 12
    assert _digest(project / "data/cams.zarr") == _digest(reference / "data/cams.zarr")
    assert not (project / ".staging/cams").exists()


def test_train_cls_killed_after_epoch_two_resumes_to_bitwise_equal_weights(reproduced_project, tmp_path):
    settings = {"train_cls": {"epochs": 5}, "distributed": {"nproc_per_node": 1}}
    reference = _copy(reproduced_project, tmp_path / "reference", **settings)
    _wsss(reference, "train_cls")
    project = _copy(reproduced_project, tmp_path / "p", **settings)
    epochs = lambda: max((int(p.stem.split("-")[1]) for p in (project / ".staging/train_cls").glob("*/epoch-*.pt")), default=0)
    seen = _kill_when(["wsss", "train_cls"], project, epochs, 2)
    rerun = _wsss(project, "train_cls")
    done = int(re.search(r"train_cls: resuming, (\d+) of 5 epochs already done", rerun.stderr).group(1))
    assert 2 <= seen <= done < 5
    assert f"epoch {done}:" not in rerun.stderr and "epoch 5:" in rerun.stderr  # finished epochs are not trained again
    reference_weights, resumed = _weights(reference / "data/models/classifier.pt"), _weights(project / "data/models/classifier.pt")
    assert all(torch.equal(reference_weights[name], resumed[name]) for name in reference_weights)
    assert (project / "plots/classifier_training.csv").read_bytes() == (reference / "plots/classifier_training.csv").read_bytes()


def test_a_failing_rank_stops_the_others_with_its_error(one_process, tmp_path):
    """Rank 1 meets an undecodable image while rank 0 goes on to wait for it: both end, non-zero."""
    project = _copy(one_process, tmp_path / "p", distributed={"nproc_per_node": 2})
    index = DatasetIndex(project / "data/dataset.zarr")
    broken = project / index.root / index.files[index.ids.index(Artifact(project / "data/cams.zarr", "cams").ids[SHARD])]
    broken.write_bytes(b"not a jpeg")  # the first image of shard 1, which is rank 1's
    started = time.monotonic()
    result = _wsss(project, "cams", check=False, timeout=240)
    assert result.returncode != 0
    assert broken.name in result.stderr
    assert "failed in one of its 2 processes" in result.stderr
    assert time.monotonic() - started < 200
    assert _digest(project / "data/cams.zarr") == _digest(one_process / "data/cams.zarr")  # the old store, untouched


def test_staging_is_keyed_by_params_code_and_inputs(tmp_path, monkeypatch):
    """A changed param, code file or input gives a new staging folder and removes the stale one;
    an unchanged stage finds its folder again (what a resumed run relies on)."""
    from pipeline.core.distributed import Group
    from stages.runner.params import StageParams
    from stages.runner.staging import staging_folder

    monkeypatch.chdir(tmp_path)
    Path("code.py").write_text("x = 1\n")
    Path("inputs").mkdir()
    Path("inputs/a.bin").write_bytes(b"a")
    Path("dvc.yaml").write_text(yaml.safe_dump({"stages": {"cams": {"cmd": "wsss cams", "deps": ["code.py", "${data.root}"],
                                                                     "params": ["cams"], "outs": ["out"]}}}))

    def folder(**params) -> Path:
        Path("params.yaml").write_text(yaml.safe_dump(merged({"cams": {"scales": [1.0]}, "data": {"root": "inputs"}, "other": 1}, params)))
        return staging_folder("cams", StageParams(Path("params.yaml")), Group())

    first = folder()
    assert folder() == first and folder(other=2) == first  # a key the stage does not declare changes nothing
    changed_param = folder(cams={"scales": [0.5, 1.0]})
    assert changed_param != first and not first.exists()
    os.utime("inputs/a.bin", ns=(1, 1))
    changed_input = folder(cams={"scales": [0.5, 1.0]})
    assert changed_input != changed_param and not changed_param.exists()
    Path("code.py").write_text("x = 2\n")
    assert folder(cams={"scales": [0.5, 1.0]}) != changed_input and not changed_input.exists()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_runs_the_forward_in_half_and_keeps_float32_weights(amp):
    from pipeline.core.trainer import Trainer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"), amp=amp)
    assert trainer.scaler.is_enabled() == (amp == "fp16")  # loss scaling only where float16 gradients can underflow
    before = [p.detach().clone() for p in model.parameters()]
    with trainer.autocast():
        output = trainer.network(torch.randn(4, 8))
    assert output.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    trainer.step(trainer.share_of_mean(output.float().square().sum(), 4))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_training_stages_with_batchnorm_run_as_two_processes(reproduced_project, tmp_path):
    """The classifier's stem and the segmenter's head have train-mode BatchNorm (per rank on CPU),
    and the segmenter's backbone holds a ViT head it never runs: DDP must handle both."""
    project = _copy(reproduced_project, tmp_path / "p", distributed={"nproc_per_node": 2})
    for stage, model in (("train_cls", "classifier.pt"), ("train_seg", "segmenter.pt")):
        before = _weights(project / "data/models" / model)
        _wsss(project, stage)
        after = _weights(project / "data/models" / model)
        assert all(torch.isfinite(value).all() for value in after.values() if value.is_floating_point())
        assert any(not torch.equal(before[name], after[name]) for name in after)  # it wrote a model of its own
        assert yaml.safe_load((project / "metrics/timings" / f"{stage}.json").read_text())["processes"] == 2
