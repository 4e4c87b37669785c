"""Jetson specifics: power mode, clock locking, and board power from tegrastats or jtop.

Everything that reads tool output is a pure function over text (tested on recorded lines):

* :func:`parse_nvpmodel` - ``nvpmodel -q`` prints ``NV Power Mode: <name>`` and then the mode id.
* :func:`parse_jetson_clocks` - ``jetson_clocks --show`` prints one line per CPU
  (``cpu0: Online=1 Governor=schedutil MinFreq=... MaxFreq=... CurrentFreq=... IdleStates: ...``),
  ``GPU MinFreq=... MaxFreq=... CurrentFreq=...`` and ``EMC ...``; :func:`clocks_locked` says the
  clocks are pinned when every online CPU and the GPU have min = max = current.
* :func:`parse_tegrastats_line` - the power rails of one tegrastats line. Older boards print
  ``POM_5V_IN 2606/2606`` or ``VDD_IN 4952/4952`` (milliwatts, current/average), newer ones
  ``VDD_IN 5033mW/5033mW``. The board input is the ``VDD_IN`` / ``POM_5V_IN`` / ``VIN`` rail where
  the board meters it; otherwise (AGX Orin: ``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0``) the
  sum of the listed rails, marked as such.

Energy per image (:func:`energy_mj_per_image`): mean power (mW) x busy seconds / images = mJ.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

INPUT_RAILS: tuple[str, ...] = ("VDD_IN", "POM_5V_IN", "VIN", "VDD_5V_IN")
"""Rails that meter the whole board/module input, in order of preference."""

_RAIL = re.compile(r"(?:(?<=\s)|^)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_NVP = re.compile(r"NV Power Mode:\s*(.+)")
_CPU = re.compile(r"cpu(\d+):\s*Online=(\d)\s+Governor=(\S+)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)")
_UNIT = re.compile(r"\b(GPU|EMC)\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)")


def is_jetson(root: Path = Path("/")) -> bool:
    """True on an NVIDIA Jetson (L4T release file, or a device-tree model naming Jetson)."""
    if (root / "etc/nv_tegra_release").exists():
        return True
    model = root / "proc/device-tree/model"
    try:
        return "jetson" in model.read_bytes().decode("utf-8", "replace").lower()
    except OSError:
        return False


def board_model(root: Path = Path("/")) -> str | None:
    try:
        return (root / "proc/device-tree/model").read_bytes().decode("utf-8", "replace").strip("\0 \n") or None
    except OSError:
        return None


# -- pure parsers ----------------------------------------------------------------------------
def parse_nvpmodel(text: str) -> dict[str, Any]:
    """``{"mode": "MAXN", "id": 0}`` from ``nvpmodel -q`` output (``None`` for what is missing)."""
    mode: str | None = None
    mode_id: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _NVP.search(line)
        if m:
            mode = m.group(1).strip()
        elif re.fullmatch(r"\d+", line) and mode is not None and mode_id is None:
            mode_id = int(line)
    return {"mode": mode, "id": mode_id}


def parse_jetson_clocks(text: str) -> dict[str, Any]:
    """CPU/GPU/EMC frequencies from ``jetson_clocks --show`` (Hz or kHz as printed)."""
    cpus: dict[str, dict[str, Any]] = {}
    units: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        m = _CPU.search(line)
        if m:
            cpus[f"cpu{m.group(1)}"] = {"online": m.group(2) == "1", "governor": m.group(3),
                                       "min": int(m.group(4)), "max": int(m.group(5)), "current": int(m.group(6))}
            continue
        m = _UNIT.search(line)
        if m:
            units[m.group(1).lower()] = {"min": int(m.group(2)), "max": int(m.group(3)), "current": int(m.group(4))}
    return {"cpus": cpus, **units}


def clocks_locked(show: Mapping[str, Any]) -> bool | None:
    """Pinned clocks: every online CPU and the GPU at min = max = current. ``None``: nothing parsed."""
    checks = []
    for cpu in show.get("cpus", {}).values():
        if cpu.get("online", True):
            checks.append(cpu["min"] == cpu["max"] == cpu["current"])
    gpu = show.get("gpu")
    if gpu:
        checks.append(gpu["min"] == gpu["max"] == gpu["current"])
    return all(checks) if checks else None


@dataclass(frozen=True)
class PowerSample:
    """One tegrastats line's power: every rail's instantaneous mW and the board total."""

    rails: dict[str, int]
    total_mw: int | None
    total_source: str | None
    """The rail the total came from, ``"sum of rails"``, or ``None`` when the line had no rails."""
    t: float = 0.0
    """Host ``perf_counter`` when the line was read (0 for parsed text)."""


def parse_tegrastats_line(line: str, t: float = 0.0) -> PowerSample:
    """The power rails of one tegrastats output line (current values; the ``/avg`` part is ignored)."""
    rails = {m.group(1): int(m.group(2)) for m in _RAIL.finditer(line) if m.group(1) not in ("RAM", "SWAP")}
    for name in INPUT_RAILS:
        if name in rails:
            return PowerSample(rails, rails[name], name, t)
    if rails:
        return PowerSample(rails, sum(rails.values()), "sum of rails", t)
    return PowerSample(rails, None, None, t)


def parse_jtop_power(power: Mapping[str, Any], t: float = 0.0) -> PowerSample:
    """A :class:`PowerSample` from jtop's ``jetson.power`` (``{"rail": {name: {"power": mW, ...}},
    "tot": {"power": mW, ...}}``)."""
    rails = {str(k): int(v.get("power", 0)) for k, v in (power.get("rail") or {}).items() if isinstance(v, Mapping)}
    tot = power.get("tot") or {}
    if isinstance(tot, Mapping) and "power" in tot:
        return PowerSample(rails, int(tot["power"]), "jtop tot", t)
    if rails:
        return PowerSample(rails, sum(rails.values()), "sum of rails", t)
    return PowerSample(rails, None, None, t)


def summarize_power(samples: Iterable[PowerSample]) -> dict[str, Any] | None:
    """Mean board power and per-rail means over ``samples`` (``None`` if none carried power)."""
    usable = [s for s in samples if s.total_mw is not None]
    if not usable:
        return None
    names = sorted({n for s in usable for n in s.rails})
    rails = {n: round(statistics.fmean(s.rails[n] for s in usable if n in s.rails), 1) for n in names}
    return {"mean_mw": round(statistics.fmean(s.total_mw for s in usable), 1),
            "max_mw": max(s.total_mw for s in usable), "samples": len(usable),
            "total_source": usable[0].total_source, "rails_mean_mw": rails}


def energy_mj_per_image(mean_mw: float, seconds: float, images: int) -> float:
    """Millijoules per image: ``mean_mw`` x ``seconds`` / ``images`` (mW x s = mJ)."""
    if images <= 0:
        raise ValueError(f"images must be > 0, got {images}")
    return mean_mw * seconds / images


# -- tools -----------------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (res.stdout or "") + (res.stderr or "")


def jetson_state() -> dict[str, Any]:
    """Power mode, clocks and warnings of this Jetson (call only where :func:`is_jetson`)."""
    state: dict[str, Any] = {"board": board_model(), "warnings": []}
    try:
        state["l4t"] = Path("/etc/nv_tegra_release").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        state["l4t"] = None
    text = _run(["nvpmodel", "-q"])
    state["nvpmodel"] = parse_nvpmodel(text) if text else None
    if text is None:
        state["warnings"].append("nvpmodel not found: the power mode is unknown")
    show = _run(["jetson_clocks", "--show"])
    parsed = parse_jetson_clocks(show) if show else {}
    locked = clocks_locked(parsed) if show else None
    state["jetson_clocks"] = parsed or None
    state["clocks_locked"] = locked
    if locked is False:
        state["warnings"].append("clocks are not locked: run `sudo jetson_clocks` for stable latencies")
    elif locked is None:
        state["warnings"].append("cannot tell whether clocks are locked (jetson_clocks --show gave nothing; "
                                 "it usually needs sudo)")
    return state


class TegrastatsSampler:
    """Runs ``tegrastats --interval MS`` in the background and keeps the parsed power samples."""

    source = "tegrastats"

    def __init__(self, interval_ms: int = 100, executable: str = "tegrastats"):
        self.interval_ms = int(interval_ms)
        self.executable = executable
        self.samples: list[PowerSample] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @staticmethod
    def available(executable: str = "tegrastats") -> bool:
        return shutil.which(executable) is not None

    def _reader(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            sample = parse_tegrastats_line(line, time.perf_counter())
            with self._lock:
                self.samples.append(sample)

    def start(self) -> "TegrastatsSampler":
        self._proc = subprocess.Popen([self.executable, "--interval", str(self.interval_ms)],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._reader, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def window(self, t0: float, t1: float) -> list[PowerSample]:
        """Samples read between ``t0`` and ``t1`` (``perf_counter`` seconds)."""
        with self._lock:
            return [s for s in self.samples if t0 <= s.t <= t1]

    def __enter__(self) -> "TegrastatsSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JtopSampler(TegrastatsSampler):
    """The same interface over jetson-stats (``from jtop import jtop``), polled every interval."""

    source = "jtop"

    def __init__(self, interval_ms: int = 100):
        super().__init__(interval_ms)
        self._stop = threading.Event()

    @staticmethod
    def available(executable: str = "") -> bool:
        import importlib.util

        return importlib.util.find_spec("jtop") is not None

    def _poll(self) -> None:
        from jtop import jtop

        with jtop(interval=self.interval_ms / 1e3) as jet:
            while not self._stop.is_set() and jet.ok():
                sample = parse_jtop_power(jet.power, time.perf_counter())
                with self._lock:
                    self.samples.append(sample)

    def start(self) -> "JtopSampler":
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="jtop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


@dataclass
class PowerProbe:
    """Which power source this machine has (or why none)."""

    sampler: TegrastatsSampler | None
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def power_probe(interval_ms: int = 100) -> PowerProbe:
    """A power sampler for this machine: tegrastats, else jtop, else ``None`` with the reason."""
    if not is_jetson():
        return PowerProbe(None, "not a Jetson: board power is measured on Jetsons only")
    if TegrastatsSampler.available():
        return PowerProbe(TegrastatsSampler(interval_ms))
    if JtopSampler.available():
        return PowerProbe(JtopSampler(interval_ms))
    return PowerProbe(None, "neither tegrastats nor jtop (pip install jetson-stats) was found")
