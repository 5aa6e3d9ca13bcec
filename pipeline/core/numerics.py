"""Pinned CPU numerics: the same float32 bytes from any x86-64 CPU with AVX2.

A CPU run's bytes depend on things a user does not choose on purpose:

- the kernel path: ATen dispatches its vectorised kernels (softmax, GELU, norms, reductions) to
  the widest instruction set the CPU has, oneMKL picks its GEMM code per CPU, and oneDNN (the
  convolutions) JIT-compiles for the CPU and blocks for its caches. AVX-512 and AVX2 paths sum
  in other orders;
- the thread count: oneMKL's GEMM (measured on small shapes, even in strict CNR mode), ATen's
  convolution weight gradient, LayerNorm's weight gradient, oneDNN's weight gradients and any
  full reduction of 32,768 elements or more add per-thread partial sums.

Pinned (the default), every stage process uses ATen's AVX2 kernels, oneMKL's AVX2 code path
(conditional numerical reproducibility), oneDNN capped at AVX2, and :data:`PINNED_THREADS`
intra-op threads. These libraries read their settings once, when they load, so
:func:`pin_environment` must run before anything imports torch: the `wsss` command calls it
first, and torchrun's ranks inherit the environment and call it again.
``WSSS_CPU_KERNELS=native`` leaves all of it alone: every core, the CPU's widest kernels, and
bytes that follow both.

docs/reproducibility.md has the measurements, and what is and is not covered.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

SWITCH = "WSSS_CPU_KERNELS"
PINNED, NATIVE = "pinned", "native"

# Two threads: the machine the default run is sized for (2 cores, docs/reproducibility.md).
PINNED_THREADS = 2
# AVX2: the widest instruction set every x86-64 CPU sold since about 2015 has, named the way
# each library spells it. The thread variables are read by OpenMP, oneMKL and ATen at load.
PINNED_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": str(PINNED_THREADS),
    "MKL_NUM_THREADS": str(PINNED_THREADS),
}


class NumericsError(RuntimeError):
    """An unknown ``WSSS_CPU_KERNELS`` value."""


_PINNED: list[bool] = []  # set by pin_environment: whether this process runs pinned


def mode() -> str:
    """``pinned`` (the default) or ``native``, from ``WSSS_CPU_KERNELS``."""
    value = os.environ.get(SWITCH, PINNED).strip().lower() or PINNED
    if value not in (PINNED, NATIVE):
        raise NumericsError(f"{SWITCH}={value!r}: use {PINNED} (the same bytes on any AVX2 CPU) or {NATIVE}")
    return value


def cpu_has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on a Linux x86-64 CPU that reports AVX2 (without /proc/cpuinfo: False, nothing pinned)."""
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx2" in flags.split()


def pin_environment() -> dict[str, str]:
    """Set the kernel-path variables of :data:`PINNED_ENVIRONMENT` (overriding values set outside)
    and return them; nothing with ``WSSS_CPU_KERNELS=native``, on a CPU without AVX2, or where
    torch loaded first (then with a warning: the libraries have read their settings already)."""
    _PINNED.clear()
    if mode() == NATIVE or not cpu_has_avx2():
        return {}
    if "torch" in sys.modules and any(os.environ.get(k) != v for k, v in PINNED_ENVIRONMENT.items()):
        warnings.warn("torch was imported before the CPU numerics could be pinned: this process keeps the native kernels",
                      RuntimeWarning, stacklevel=2)
        return {}
    os.environ.update(PINNED_ENVIRONMENT)
    _PINNED.append(True)
    return dict(PINNED_ENVIRONMENT)


def pinned() -> bool:
    """Whether :func:`pin_environment` pinned this process."""
    return bool(_PINNED)


def describe() -> dict[str, str]:
    """The numerics of this process, for reports: switch, ATen's kernel path, threads, torch."""
    import torch

    return {"cpu_kernels": PINNED if pinned() else NATIVE, "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": str(torch.get_num_threads()), "torch": torch.__version__}
