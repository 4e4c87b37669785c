"""Timing primitives shared by every benchmark: clocks, warm-up + timed runs, summary statistics,
and interleaved A/B(/C...) measurement with per-round ratios.

Why interleave: on a shared machine the background load drifts over seconds to minutes. Timing
model A for a minute and then model B for a minute puts that drift into the A/B ratio. Running
the targets round-robin instead (round 0: A B C, round 1: C B A, round 2: A B C, ...; the
"serpentine" order keeps every target's average position in a round the same, so a linear drift
cancels) puts A's and B's samples of one round a few calls apart, and the median of the per-round
ratios ``t_A / t_B`` is far more stable than either latency alone.

Clocks: :class:`PerfCounterClock` (``time.perf_counter`` around a synchronous call) and
:class:`CudaEventClock` (a pair of ``torch.cuda.Event(enable_timing=True)`` recorded on the current
stream around the call, then ``end.synchronize()``; ``elapsed_time`` is in milliseconds). Only the
standard library is imported here; the CUDA clock imports torch when it is built.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from manet_edge.errors import BadInputError

Step = Callable[[], Any]


# -- statistics ------------------------------------------------------------------------------
def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics.

    The same definition as ``numpy.percentile(..., method="linear")``: position ``(n-1) q/100``.
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise BadInputError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise BadInputError(f"percentile q must be in [0, 100], got {q}")
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one target's timed runs, in milliseconds per call (one call = one batch)."""

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    std_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "LatencyStats":
        if not samples:
            raise BadInputError("no timed runs to summarise (runs must be >= 1)")
        ms = [1e3 * float(s) for s in samples]
        return cls(n=len(ms), median_ms=statistics.median(ms), p90_ms=percentile(ms, 90),
                   p99_ms=percentile(ms, 99), min_ms=min(ms), max_ms=max(ms), mean_ms=statistics.fmean(ms),
                   std_ms=statistics.stdev(ms) if len(ms) > 1 else 0.0)

    def throughput(self, batch: int) -> float:
        """Images per second at the median latency (``batch`` images per call)."""
        return 1e3 * batch / self.median_ms if self.median_ms > 0 else float("inf")

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RatioStats:
    """``t_a / t_b`` over rounds where both ran: median of the per-round ratios and its spread."""

    a: str
    b: str
    n: int
    median: float
    p10: float
    p90: float
    ratio_of_medians: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def paired_ratio(rounds: Sequence[Mapping[str, float]], a: str, b: str) -> RatioStats | None:
    """Ratio statistics of ``a`` over ``b`` from interleaved rounds (``None`` if no round has both)."""
    pairs = [(r[a], r[b]) for r in rounds if a in r and b in r and r[b] > 0]
    if not pairs:
        return None
    ratios = [x / y for x, y in pairs]
    med_b = statistics.median(y for _, y in pairs)
    return RatioStats(a=a, b=b, n=len(ratios), median=statistics.median(ratios), p10=percentile(ratios, 10),
                      p90=percentile(ratios, 90),
                      ratio_of_medians=statistics.median(x for x, _ in pairs) / med_b if med_b > 0 else float("nan"))


# -- clocks ----------------------------------------------------------------------------------
class PerfCounterClock:
    """Wall time of a synchronous call with ``time.perf_counter``."""

    name = "perf_counter"

    def __call__(self, step: Step) -> float:
        t0 = time.perf_counter()
        step()
        return time.perf_counter() - t0


class CudaEventClock:
    """GPU time of the work ``step`` enqueues on the current CUDA stream, via CUDA events.

    ``step`` must enqueue its work on the current stream (torch eager does); the clock records a
    start and an end event around it and waits for the end event. Returns seconds.
    """

    name = "cuda_events"

    def __init__(self, device: Any = None):
        import torch

        self._torch = torch
        self._device = device
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def __call__(self, step: Step) -> float:
        self._start.record()
        step()
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1e3


Clock = Callable[[Step], float]


# -- measurement -----------------------------------------------------------------------------
def check_counts(warmup: int, runs: int) -> None:
    if warmup < 0:
        raise BadInputError(f"warmup must be >= 0, got {warmup}")
    if runs < 1:
        raise BadInputError(f"runs must be >= 1, got {runs}")


def measure(step: Step, *, warmup: int, runs: int, clock: Clock | None = None) -> list[float]:
    """``warmup`` untimed calls, then ``runs`` timed calls; seconds per call."""
    check_counts(warmup, runs)
    clock = clock or PerfCounterClock()
    for _ in range(warmup):
        step()
    return [clock(step) for _ in range(runs)]


def serpentine(labels: Sequence[str], round_index: int) -> list[str]:
    """The order of one interleaved round: ``labels`` forward on even rounds, reversed on odd ones."""
    return list(labels) if round_index % 2 == 0 else list(reversed(labels))


@dataclass
class Interleaved:
    """Result of :func:`interleave`: samples per label, the rounds, and labels that failed."""

    samples: dict[str, list[float]]
    rounds: list[dict[str, float]]
    order: list[list[str]]
    errors: dict[str, str]

    def stats(self, label: str) -> LatencyStats | None:
        s = self.samples.get(label)
        return LatencyStats.from_seconds(s) if s else None

    def ratio(self, a: str, b: str) -> RatioStats | None:
        if a in self.errors or b in self.errors:
            return None
        return paired_ratio(self.rounds, a, b)


def interleave(steps: Mapping[str, tuple[Step, Clock]], *, warmup: int, runs: int,
               on_error: Callable[[str, BaseException], None] | None = None) -> Interleaved:
    """Time every step round-robin: ``warmup`` untimed rounds, then ``runs`` timed rounds.

    Each round calls every step once, in :func:`serpentine` order. A step that raises is dropped
    from the remaining rounds and its error recorded (``on_error`` is told); the others go on.
    ``KeyboardInterrupt`` propagates.
    """
    check_counts(warmup, runs)
    labels = list(steps)
    alive = set(labels)
    errors: dict[str, str] = {}
    samples: dict[str, list[float]] = {k: [] for k in labels}
    rounds: list[dict[str, float]] = []
    order: list[list[str]] = []

    def call(label: str, timed: bool) -> float | None:
        step, clock = steps[label]
        try:
            if timed:
                return clock(step)
            step()
        except Exception as exc:  # a failing backend must not stop the other targets
            alive.discard(label)
            errors[label] = f"{type(exc).__name__}: {exc}"
            if on_error is not None:
                on_error(label, exc)
        return None

    for i in range(warmup):
        for label in serpentine(labels, i):
            if label in alive:
                call(label, False)
    for i in range(runs):
        this = [label for label in serpentine(labels, warmup + i) if label in alive]
        order.append(this)
        record: dict[str, float] = {}
        for label in this:
            t = call(label, True)
            if t is not None:
                record[label] = t
                samples[label].append(t)
        rounds.append(record)
    return Interleaved(samples={k: v for k, v in samples.items() if k not in errors}, rounds=rounds,
                       order=order, errors=errors)
