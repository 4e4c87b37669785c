"""``manet_edge.benchmarks.ma_overhead``: session averaging and argument checks (no timing here)."""

from __future__ import annotations

import numpy as np
import pytest

from manet_edge.benchmarks import ma_overhead


def test_session_means_average_each_models_sessions_per_round():
    times = {"plain#0": np.array([1.0, 2.0]), "plain#1": np.array([3.0, 4.0]), "fused#0": np.array([5.0, 7.0])}
    out = ma_overhead.session_means(times)
    assert sorted(out) == ["fused", "plain"]
    np.testing.assert_array_equal(out["plain"], [2.0, 3.0])
    np.testing.assert_array_equal(out["fused"], [5.0, 7.0])


@pytest.mark.parametrize("args", [["--sessions", "0"], ["--pairs", "5"], ["--threads", "0"]])
def test_bad_arguments_are_refused_before_any_work(args):
    with pytest.raises(SystemExit) as exc:
        ma_overhead.main(args)
    assert exc.value.code == 2
