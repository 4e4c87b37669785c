"""What this CPU can do, read at run time (torch-free): model name and the ISA extensions that
decide whether bf16 pays off (AMX, AVX-512 BF16) and int8 (VNNI, AMX-INT8)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""Flags (``/proc/cpuinfo``) under which bf16 convolutions run natively rather than emulated."""
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
INTERESTING = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def describe(flags: frozenset[str] | None = None) -> dict[str, object]:
    """CPU model and the extensions that matter here, for result files."""
    flags = cpu_flags() if flags is None else flags
    return {"cpu": cpu_model(), "isa": [f for f in INTERESTING if f in flags], "native_bf16": has_native_bf16(flags)}
