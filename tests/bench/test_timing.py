"""Timing primitives: percentiles, summary stats, serpentine interleaving, paired ratios, clocks."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from manet_edge.benchmarks import timing
from manet_edge.benchmarks.timing import (
    CudaEventClock,
    LatencyStats,
    interleave,
    measure,
    paired_ratio,
    percentile,
    serpentine,
)
from manet_edge.errors import BadInputError


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(q):
    values = list(np.random.default_rng(0).exponential(3.0, 37))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_rejects_bad_input():
    with pytest.raises(BadInputError, match="empty"):
        percentile([], 50)
    with pytest.raises(BadInputError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_latency_stats_from_known_samples():
    s = LatencyStats.from_seconds([0.001, 0.002, 0.003, 0.004, 0.010])
    assert s.n == 5
    assert s.median_ms == pytest.approx(3.0)
    assert s.min_ms == pytest.approx(1.0) and s.max_ms == pytest.approx(10.0)
    assert s.p90_ms == pytest.approx(7.6)  # 4 + 0.6 * (10 - 4)
    assert s.p99_ms == pytest.approx(9.76)
    assert s.mean_ms == pytest.approx(4.0)
    assert s.throughput(4) == pytest.approx(4 / 0.003)
    assert set(s.as_dict()) == {"n", "median_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "mean_ms", "std_ms"}
    one = LatencyStats.from_seconds([0.5])
    assert one.std_ms == 0.0 and one.p99_ms == one.median_ms == 500.0
    with pytest.raises(BadInputError, match="runs must be >= 1"):
        LatencyStats.from_seconds([])


def test_paired_ratio_uses_rounds_where_both_ran():
    rounds = [{"a": 2.0, "b": 1.0}, {"a": 3.0, "b": 1.0}, {"a": 4.0}, {"a": 1.0, "b": 1.0}]
    r = paired_ratio(rounds, "a", "b")
    assert r.n == 3 and r.median == pytest.approx(2.0)
    assert r.p10 == pytest.approx(1.2) and r.p90 == pytest.approx(2.8)
    assert r.ratio_of_medians == pytest.approx(2.0)
    assert paired_ratio(rounds, "a", "missing") is None


def test_serpentine_order():
    assert serpentine(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert serpentine(["a", "b", "c"], 1) == ["c", "b", "a"]
    assert serpentine(["a", "b", "c"], 2) == ["a", "b", "c"]


class FakeClock:
    """Returns a scripted time per call and records which step ran."""

    name = "fake"

    def __init__(self, per_label: dict[str, float], log: list[str]):
        self.per_label = per_label
        self.log = log

    def __call__(self, step):
        label = step()
        return self.per_label[label]


def test_interleave_order_warmup_and_stats():
    calls: list[str] = []

    def make(label):
        def step():
            calls.append(label)
            return label
        return step

    per = {"plain": 0.010, "ma": 0.012, "other": 0.020}
    clock = FakeClock(per, calls)
    res = interleave({k: (make(k), clock) for k in per}, warmup=1, runs=3)
    # warm-up round 0 forward; timed rounds 1..3 continue the serpentine
    assert calls == ["plain", "ma", "other",
                     "other", "ma", "plain",
                     "plain", "ma", "other",
                     "other", "ma", "plain"]
    assert res.order == [["other", "ma", "plain"], ["plain", "ma", "other"], ["other", "ma", "plain"]]
    assert res.samples["ma"] == [0.012] * 3
    assert res.stats("plain").median_ms == pytest.approx(10.0)
    assert res.ratio("ma", "plain").median == pytest.approx(1.2)
    assert res.errors == {}


def test_interleave_drops_a_failing_step_and_keeps_the_others():
    state = {"n": 0}

    def flaky():
        state["n"] += 1
        if state["n"] == 3:  # warm-up, first timed call, then fails
            raise RuntimeError("device lost")

    seen = []
    res = interleave({"ok": (lambda: None, timing.PerfCounterClock()), "flaky": (flaky, timing.PerfCounterClock())},
                     warmup=1, runs=4, on_error=lambda label, exc: seen.append(label))
    assert seen == ["flaky"]
    assert "device lost" in res.errors["flaky"]
    assert "flaky" not in res.samples and len(res.samples["ok"]) == 4
    assert res.stats("flaky") is None and res.ratio("flaky", "ok") is None


def test_measure_counts_and_validation():
    n = {"calls": 0}

    def step():
        n["calls"] += 1

    samples = measure(step, warmup=2, runs=5)
    assert len(samples) == 5 and n["calls"] == 7 and all(s >= 0 for s in samples)
    with pytest.raises(BadInputError, match="runs must be >= 1"):
        measure(step, warmup=0, runs=0)
    with pytest.raises(BadInputError, match="warmup must be >= 0"):
        interleave({"a": (step, timing.PerfCounterClock())}, warmup=-1, runs=1)


def test_cuda_event_clock_records_around_the_step(monkeypatch):
    """The CUDA clock with a stand-in torch: start.record, step, end.record, end.synchronize, elapsed_time."""
    log: list[str] = []

    class Event:
        count = 0

        def __init__(self, enable_timing=False):
            assert enable_timing
            Event.count += 1
            self.name = "start" if Event.count == 1 else "end"

        def record(self):
            log.append(f"{self.name}.record")

        def synchronize(self):
            log.append(f"{self.name}.synchronize")

        def elapsed_time(self, other):
            log.append("elapsed")
            return 12.5  # ms

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Event=Event))
    monkeypatch.setitem(sys.modules, "torch", fake)
    clock = CudaEventClock()
    assert clock.name == "cuda_events"
    assert clock(lambda: log.append("step")) == pytest.approx(0.0125)
    assert log == ["start.record", "step", "end.record", "end.synchronize", "elapsed"]
