"""Smoke test of benchmarks/pipeline_throughput.py on the tiny models (a few images, one repeat)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "pipeline_throughput.py"


def _load():
    spec = importlib.util.spec_from_file_location("pipeline_throughput_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_and_writes_results(models_dir, tmp_path):
    bench = _load()
    bench.main(["--models", str(models_dir), "--batch", "1", "2", "--images", "4", "--image-size", "64",
                "--repeats", "1", "--model-repeats", "2", "--threads", "1", "--out", str(tmp_path), "--tag", "t"])
    doc = json.loads((tmp_path / "pipeline_throughput_onnxruntime_t.json").read_text())
    assert [r["batch"] for r in doc["rows"]] == [1, 2]
    for row in doc["rows"]:
        assert row["bound_images_per_s"] > 0 and row["e2e_images_per_s"] > 0 and row["classified"] == 4
        assert 0 < row["model_busy"] <= 1.0001
    assert "| batch |" in (tmp_path / "pipeline_throughput_onnxruntime_t.md").read_text()


def test_benchmark_with_streams_reports_both_ratios(models_dir, tmp_path):
    bench = _load()
    bench.main(["--models", str(models_dir), "--batch", "2", "--images", "6", "--image-size", "64", "--streams", "2",
                "--repeats", "1", "--model-repeats", "2", "--out", str(tmp_path), "--tag", "s"])
    doc = json.loads((tmp_path / "pipeline_throughput_onnxruntime_s.json").read_text())
    assert doc["streams"] == 2 and doc["threads_per_stream"] >= 1
    (row,) = doc["rows"]
    assert row["streams"] == 2 and row["classified"] == 6 and row["models_only_images_per_s"] > 0
    assert row["efficiency_vs_models_only"] == row["e2e_images_per_s"] / row["models_only_images_per_s"]
    assert row["pipeline_runner_seg_s_per_batch"] > 0 and row["pipeline_runner_cls_s_per_batch"] > 0
