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
