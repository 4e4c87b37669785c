"""Mixed precision for CPU (and CUDA) training: ``--amp auto|bf16|off``.

``bf16`` runs forward passes under ``torch.autocast(dtype=torch.bfloat16)`` with the model in
channels_last memory format; weights, optimizer state and the loss stay fp32. ``auto`` turns it
on only where the CPU computes bf16 natively (AMX or AVX-512 BF16, read from ``/proc/cpuinfo``)
or on CUDA; elsewhere bf16 is emulated and slower than fp32.
"""

from __future__ import annotations

import contextlib

import torch

from manet_edge.choices import AMP_MODES
from manet_edge.cpu import has_native_bf16
from manet_edge.errors import ManetEdgeError


def resolve_amp(mode: str, device: str = "cpu") -> str:
    """``"bf16"`` or ``"off"`` for the requested mode on this machine."""
    if mode not in AMP_MODES:
        raise ManetEdgeError(f"unknown amp mode {mode!r}; choose one of {list(AMP_MODES)}")
    if mode == "auto":
        return "bf16" if (str(device).startswith("cuda") or has_native_bf16()) else "off"
    return mode


def autocast(amp: str, device: str = "cpu"):
    if amp != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)


def prepare_model(model: torch.nn.Module, amp: str) -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last) if amp == "bf16" else model
