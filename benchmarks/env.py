"""The environment a benchmark ran in, captured with every result.

:func:`capture` returns a JSON-ready dict: time, platform, CPU model / logical and physical cores /
the cores this process may use / the instruction-set flags that matter for inference (AVX2,
AVX-512, bf16, AMX), load average, memory, GPUs (``nvidia-smi``; torch's CUDA version when torch
is already imported), library versions, the thread settings, and on a Jetson the power mode and
clock state (:mod:`manet_edge.benchmarks.jetson`). Nothing heavy is imported: versions come from
package metadata. :func:`machine_slug` names the results folder (``cpu-2core-amd-epyc``).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from manet_edge.benchmarks import jetson

ISA_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16",
                              "amx_int8", "amx_tile", "asimd", "sve", "bf16")
"""CPU flags worth recording: they decide which kernels (and whether bf16) a backend can use."""

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name, physical cores and selected flags from ``/proc/cpuinfo`` text (x86 and Arm)."""
    model = None
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    phys, core = "0", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware") and model is None and value:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif key in ("flags", "Features"):
            flags.update(value.split())
        elif not line.strip() and core is not None:
            cores.add((phys, core))
            core = None
    if core is not None:
        cores.add((phys, core))
    return {"model": model, "physical_cores": len(cores) or None,
            "isa": sorted(f for f in flags if f in ISA_FLAGS)}


def cpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"model": None, "physical_cores": None, "isa": []}
    try:
        info.update(parse_cpuinfo(Path("/proc/cpuinfo").read_text()))
    except OSError:
        pass
    if not info["model"]:
        info["model"] = platform.processor() or platform.machine()
    info["logical_cores"] = os.cpu_count()
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_cores"] = os.cpu_count()
    info["arch"] = platform.machine()
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (``None`` where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def parse_nvidia_smi(text: str) -> list[dict[str, str]]:
    """Rows of ``nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def gpu_info() -> dict[str, Any]:
    """GPUs from ``nvidia-smi`` and CUDA from torch (only if torch is already imported)."""
    out: dict[str, Any] = {"gpus": [], "cuda": None}
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=15, check=False)
            out["gpus"] = parse_nvidia_smi(res.stdout)
        except (OSError, subprocess.TimeoutExpired):
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = getattr(torch.version, "cuda", None)
        try:
            if torch.cuda.is_available():
                out["torch_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                out["cudnn"] = torch.backends.cudnn.version()
        except Exception:  # a broken driver must not break the report
            pass
    return out


def library_versions() -> dict[str, str]:
    """Installed versions of manet-edge, numpy, the backends, matplotlib, jetson-stats (metadata only)."""
    import importlib.metadata

    from manet_edge.results import library_versions as base

    out = base()
    for name in ("matplotlib", "jetson-stats", "typer"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def threads_info() -> dict[str, Any]:
    info: dict[str, Any] = {k: os.environ[k] for k in _THREAD_VARS if k in os.environ}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def slugify(text: str) -> str:
    text = re.sub(r"\(r\)|\(tm\)|\bprocessor\b|\bcpu\b|@.*$|\d+-core", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def machine_slug(env: dict[str, Any]) -> str:
    """A folder name for this machine: ``jetson-<board>``, ``gpu-<name>`` or ``cpu-<N>core-<model>``."""
    jet = env.get("jetson") or {}
    if jet.get("board"):
        board = re.sub(r"nvidia|jetson|developer kit", " ", str(jet["board"]).lower())
        return "jetson-" + slugify(board)
    gpus = (env.get("gpu") or {}).get("gpus") or []
    if gpus:
        return "gpu-" + slugify(gpus[0]["name"])
    cpu = env.get("cpu") or {}
    cores = cpu.get("usable_cores") or cpu.get("logical_cores") or 0
    return f"cpu-{cores}core-{slugify(str(cpu.get('model') or 'unknown'))}"


def capture() -> dict[str, Any]:
    """Everything above, as one dict (call at the start of a run; :func:`snapshot` at the end)."""
    env: dict[str, Any] = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu_info(), "memory_gib": memory_gib(), "load_average_start": load_average(),
        "gpu": gpu_info(), "libraries": library_versions(), "threads": threads_info(),
        "jetson": jetson.jetson_state() if jetson.is_jetson() else None,
    }
    env["machine"] = machine_slug(env)
    return env


def snapshot(env: dict[str, Any]) -> dict[str, Any]:
    """Add end-of-run values to ``env``: load average, thread settings, time (returns ``env``)."""
    env["load_average_end"] = load_average()
    env["time_utc_end"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    env["threads"] = threads_info()
    gpu = gpu_info()
    if gpu.get("cuda") and not env["gpu"].get("cuda"):
        env["gpu"] = gpu
    return env
