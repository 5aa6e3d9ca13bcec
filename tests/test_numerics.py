"""Pinned CPU numerics (pipeline/core/numerics.py): the same bytes whatever kernel path and
thread count the environment asks for. The training check runs `wsss` in fresh processes: the
kernel path and the threads are read once, when torch loads."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from pipeline.core import numerics
from tests.conftest import BIN, make_project_copy, run


def test_unknown_switch_is_refused_and_late_pinning_keeps_native_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(numerics.SWITCH, "fast")
    with pytest.raises(numerics.NumericsError, match="WSSS_CPU_KERNELS"):
        numerics.mode()
    monkeypatch.setenv(numerics.SWITCH, "pinned")
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # torch is loaded in this process: too late to pin
    with pytest.warns(RuntimeWarning, match="before the CPU numerics") if numerics.cpu_has_avx2() else contextlib.nullcontext():
        assert numerics.pin_environment() == {}
    assert os.environ["MKL_CBWR"] == "AUTO" and not numerics.pinned()
    assert numerics.describe()["cpu_kernels"] == "native"


def test_avx2_detection_reads_the_flags_line(tmp_path: Path) -> None:
    (tmp_path / "with").write_text("processor : 0\nflags : fpu sse2 avx avx2 fma\n")
    (tmp_path / "without").write_text("processor : 0\nflags : fpu sse2 avx\n")
    assert numerics.cpu_has_avx2(tmp_path / "with")
    assert not numerics.cpu_has_avx2(tmp_path / "without")
    assert not numerics.cpu_has_avx2(tmp_path / "missing")


@pytest.fixture(scope="module")
def one_epoch_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project with its data made, where train_cls runs one epoch."""
    project = make_project_copy(tmp_path_factory.mktemp("numerics"), {"train_cls": {"epochs": 1}})
    for stage in ("synthetic", "dataset", "masks"):
        run(["wsss", stage], project)
    return project


def _trained_weights(project: Path, **env: str) -> str:
    """MD5 of classifier.pt's tensors after `wsss train_cls` under ``env``."""
    result = subprocess.run([str(BIN / "wsss"), "train_cls"], cwd=project, capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env})
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(project / "data/models/classifier.pt", map_location="cpu", weights_only=False)["state_dict"]
    digest = hashlib.md5()
    for name in sorted(state):
        digest.update(name.encode() + state[name].numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_pinned_training_gives_the_same_weights_whatever_the_environment_asks_for(one_epoch_project: Path) -> None:
    pinned = {_trained_weights(one_epoch_project, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS=threads, MKL_CBWR=cbwr)
              for capability, threads, cbwr in (("default", "1", "COMPATIBLE"), ("avx512", "2", "AUTO"), ("avx2", "3", "AVX2"))}
    assert len(pinned) == 1, pinned
    timing = json.loads((one_epoch_project / "metrics/timings/train_cls.json").read_text())["numerics"]
    assert (timing["cpu_kernels"], timing["aten_cpu_capability"], timing["threads"]) == ("pinned", "AVX2", "2")
    # The check can fail: with the native kernels the kernel path and the thread count set from
    # outside change the bytes.
    native = {_trained_weights(one_epoch_project, WSSS_CPU_KERNELS="native", ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS=threads)
              for capability, threads in (("default", "2"), ("avx2", "2"), ("avx2", "1"))}
    assert len(native) == 3, native
    timing = json.loads((one_epoch_project / "metrics/timings/train_cls.json").read_text())["numerics"]
    assert (timing["cpu_kernels"], timing["threads"]) == ("native", "1")
