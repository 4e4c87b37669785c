"""``manet-edge bench`` through typer's CliRunner: outputs, skips, exit codes, overwrite, --compare."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from manet_edge.commands import bench as bench_cmd


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root (keeps `bench` a sub-command)."""

    bench_cmd.register(app)
    return app


def _invoke(app, *args):
    return CliRunner().invoke(app, ["bench", *args])


def test_help(app):
    res = _invoke(app, "--help")
    assert res.exit_code == 0
    for opt in ("--models", "--backends", "--precisions", "--sizes", "--batches", "--runs", "--warmup", "--out",
                "--compare", "--pipeline"):
        assert opt in res.output


def test_bench_writes_results_and_refuses_to_overwrite(app, tmp_path):
    out = tmp_path / "res"
    args = ["--models", "resnet18,resnet18-ma", "--backends", "torch,tensorrt", "--sizes", "32", "--runs", "2",
            "--warmup", "0", "--threads", "1", "--out", str(out)]
    res = _invoke(app, *args)
    assert res.exit_code == 0, res.output
    for name in ("bench.json", "bench.md", "bench_latency.png", "bench_ma_overhead.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "bench.json").read_text())
    assert doc["command"] == ("manet-edge bench --models resnet18,resnet18-ma --backends torch,tensorrt --sizes 32 "
                              f"--batches 1 --runs 2 --warmup 0 --threads 1 --out {out}")
    assert [r["model"] for r in doc["results"]] == ["resnet18", "resnet18-ma"]
    assert len(doc["ratios"]["ma_vs_plain"]) == 1
    if not any(r["backend"] == "tensorrt" for r in doc["results"]):
        assert any(s["what"] == "tensorrt" for s in doc["skipped"])

    again = _invoke(app, *args)
    assert again.exit_code == 2 and "refusing to overwrite" in again.output

    res = _invoke(app, *args, "--name", "second", "--compare", str(out / "bench.json"))
    assert res.exit_code == 0, res.output
    assert "| resnet18 | 32 | 1 | torch | fp32 |" in (out / "second_compare.md").read_text()


def test_nothing_to_run_is_exit_2(app, tmp_path, monkeypatch):
    from manet_edge.benchmarks import latency

    monkeypatch.setattr(latency, "backend_unavailable", lambda b: f"{b} is not installed")
    res = _invoke(app, "--models", "resnet18", "--backends", "openvino", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "nothing to run" in res.output and "openvino is not installed" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, match", [
    (["--models", "resnet19"], "unknown model 'resnet19'"),
    (["--backends", "tflite"], "unknown backend"),
    (["--precisions", "fp64"], "unknown precision"),
    (["--sizes", "big"], "comma-separated integers"),
    (["--models", ","], "give at least one of models"),
    (["--compare", __file__], "cannot read benchmark results"),
])
def test_bad_options_are_exit_2(app, tmp_path, args, match):
    res = _invoke(app, *args, "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert match in res.output
