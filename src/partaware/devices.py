"""The one place that chooses where tensors live and in which precision the encoder runs.

Every job calls `resolve_device` (config `device: auto | cpu | cuda | cuda:N`); evaluation
helpers that take `device=None` call `pick_device`, the same rule without a config value. A
GPU job on a workstation has already taken its GPU (`gpu_slots.take_gpu`), which narrows
`CUDA_VISIBLE_DEVICES` to it and hands `cuda` on. Bad values are one-line `DeviceError`s.
"""
from __future__ import annotations

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """The configured device or precision cannot be used here; the message says what to set."""


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None) is CUDA when a GPU is visible, else the CPU; `cuda` without one is an error."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not isinstance(name, str) or not (name == "cuda" or name.startswith("cuda:")):
        raise DeviceError(f"device: {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device: {name} was asked for but no CUDA GPU is visible; use device: auto")
    if name.startswith("cuda:"):
        index, count = name.split(":", 1)[1], torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise DeviceError(f"device: {name}: this process sees {count} GPU(s) (cuda:0 .. cuda:{count - 1}); "
                              "use one of them, or device: cuda")
    return torch.device(name)


def pick_device(device=None) -> torch.device:
    """The device to compute on: the one asked for, else CUDA when present, else the CPU."""
    return resolve_device(device)


def autocast_dtype(precision: str, device: torch.device):
    """None means fp32. `auto` is bf16 on a GPU (features agree with fp32 to cos >= 0.999)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise DeviceError(f"extract.precision: {precision!r} is not a precision; use auto, fp32, bf16 or fp16")
    return PRECISIONS[precision]


def autocast(device: torch.device, amp):
    """A torch.autocast context for `amp` (None: a disabled one, i.e. fp32)."""
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
