"""The torch device a `device:` setting names."""
from __future__ import annotations

import torch

from pipeline.core.errors import InputError


class DeviceError(InputError):
    """A device setting that names no device, or CUDA where there is none."""


def resolve_device(choice: str) -> torch.device:
    """`auto` picks CUDA when present."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device: '{choice}' requested but CUDA is not available; use auto or cpu")
    try:
        return torch.device(choice)
    except RuntimeError:
        raise DeviceError(f"device: '{choice}' is not a device; use auto, cpu, cuda or cuda:N") from None
