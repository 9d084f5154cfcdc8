"""The one place that chooses where tensors live and in which precision the encoder runs.

Every job calls `resolve_device` (config `device: auto | cpu | cuda`); evaluation helpers that
take `device=None` call `pick_device`, the same rule without a config value.
"""
from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None) is CUDA when a GPU is visible, else the CPU; `cuda` without one is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but no CUDA GPU is visible; use device: auto")
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def pick_device(device=None) -> torch.device:
    """The device to compute on: the one asked for, else CUDA when present, else the CPU."""
    return resolve_device(device)


def autocast_dtype(precision: str, device: torch.device):
    """None means fp32. `auto` is bf16 on a GPU (features agree with fp32 to cos >= 0.999)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, amp):
    """A torch.autocast context for `amp` (None: a disabled one, i.e. fp32)."""
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
