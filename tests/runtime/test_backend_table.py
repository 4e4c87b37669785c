"""The backend table is the one place a backend is known: a row added here (a trivial numpy
backend, registered by the test) shows up in the CLI choices, in ``bench``'s target list and
availability checks, and its runner is prepared and timed like any other."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

# Imported before any test registers a row: the commands build their --backend choices from the
# table at import, and a test that restores them must restore the table's own, not the numpy row's.
from manet_edge.commands import compare as compare_cmd
from manet_edge.commands import infer as infer_cmd
from manet_edge.metadata import read_onnx_card
from manet_edge.runtime import backends
from manet_edge.runtime.base import Runner

MODULE = "manet_edge_test_numpy_backend"


class NumpyRunner(Runner):
    """A classifier in numpy: logits = a fixed (5, C) matrix times the masked image's channel means."""

    backend = "numpy"

    def __init__(self, path, *, precision=None, name=None, threads=None):
        super().__init__(path, precision=precision, name=name)
        self.threads = threads

    def _activate(self) -> None:
        card = read_onnx_card(str(self.path))
        shape = (None, card.in_channels, card.input_size, card.input_size)
        self._inputs = {"image": shape, "mask": (None, 1, card.input_size, card.input_size)}
        self._outputs = {"logits": (None, len(card.classes))}
        self._card, self._precision = card, "fp32"
        self._w = np.arange(5 * card.in_channels, dtype=np.float32).reshape(5, card.in_channels)

    def _infer(self, feed):
        means = (feed["image"] * feed["mask"]).mean(axis=(2, 3))
        return {"logits": means @ self._w.T}


@pytest.fixture
def numpy_backend(monkeypatch):
    module = types.ModuleType(MODULE)
    module.NumpyRunner = NumpyRunner
    monkeypatch.setitem(sys.modules, MODULE, module)
    monkeypatch.setitem(backends.BACKENDS, "numpy", None)  # removed again after the test
    return backends.register_backend(backends.BackendInfo(
        name="numpy", module=MODULE, class_name="NumpyRunner", artifact_suffix=".onnx", precisions=("fp32",),
        default_precision="fp32", devices=("cpu",), extra="test", library="numpy", distributions=("numpy",),
        runner_options=("threads",), bench_order=50))


def test_a_new_row_is_a_cli_choice(numpy_backend, monkeypatch):
    for mod in (infer_cmd, compare_cmd):  # register() rebuilds the choices; restored after the test
        monkeypatch.setattr(mod, "Backend", mod.Backend)

    app = typer.Typer()
    infer_cmd.register(app)
    compare_cmd.register(app)
    runner = CliRunner()
    for command, option in (("infer", "--backend"), ("compare", "--a-backend")):
        res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        line = next(ln for ln in res.output.splitlines() if option in ln)
        assert "numpy" in line and "onnxruntime" in line, line
    bad = runner.invoke(app, ["infer", ".", "--backend", "nosuch"])
    assert bad.exit_code == 2 and "nosuch" in bad.output


def test_a_new_row_is_in_bench_targets_and_runs(numpy_backend, cls_model, tmp_path, monkeypatch):
    from manet_edge.benchmarks import targets
    from manet_edge.benchmarks.latency import BenchConfig, plan

    assert "numpy" in backends.bench_order() and backends.bench_order()[-1] == "numpy"  # bench_order 50
    assert targets.backend_unavailable("numpy") is None
    assert backends.runner_kwargs("numpy", threads=2, streams=3) == {"threads": 2}
    assert backends.library_distributions("numpy") == ("numpy",)
    from manet_edge.results import library_versions

    assert library_versions("numpy")["numpy"] == np.__version__

    found, skips = plan(BenchConfig(models=(str(cls_model),), backends=("numpy", "onnxruntime")), [])
    assert [t.backend for t in found] == ["onnxruntime", "numpy"]  # table order: bench_order 1 < 50
    prepared = targets.prepare(found[1], work_dir=tmp_path, threads=1)
    try:
        assert prepared.precision == "fp32" and prepared.device == "cpu"
        assert np.asarray(prepared.step()["logits"]).shape == (1, 5)
    finally:
        prepared.close()

    monkeypatch.setattr(targets, "_has_module", lambda name: name != "numpy")
    _, skips = plan(BenchConfig(models=(str(cls_model),), backends=("numpy",)), [])
    assert [s.as_dict() for s in skips] == [
        {"what": "numpy", "reason": "numpy is not installed (pip install 'manet-edge[test]')"}]


def test_register_backend_refuses_unknown_runner_options(numpy_backend):
    from manet_edge.errors import BadInputError

    monkeypatch_free = dict(backends.BACKENDS)
    with pytest.raises(BadInputError, match="unknown runner options"):
        backends.register_backend(backends.BackendInfo(
            name="bad", module=MODULE, class_name="NumpyRunner", artifact_suffix=".onnx", precisions=("fp32",),
            default_precision="fp32", devices=("cpu",), extra="test", runner_options=("warp",)))
    assert backends.BACKENDS == monkeypatch_free
