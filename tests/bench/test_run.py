"""A whole (tiny) benchmark run: torch eager on zoo models, onnxruntime/openvino on tiny ONNX files,
the interleaved ratios, the FLOPs rows, failures that do not stop the run, and the pipeline stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from manet_edge.benchmarks import latency, targets
from manet_edge.benchmarks.latency import BenchConfig, run
from manet_edge.benchmarks.pipeline_stages import STAGES, bench_pipeline, stage_times
from manet_edge.commands.infer import plan_streams


def _rows(doc):
    return {(r["model"], r["backend"], r["precision"]): r for r in doc["results"]}


@pytest.fixture
def fake_export(tmp_path_factory, synth):
    """Stands in for the torch -> ONNX export: a tiny classifier ONNX per zoo name (fast)."""
    folder = tmp_path_factory.mktemp("fake_export")
    calls: list[tuple[str, int, str]] = []

    def export(spec, work_dir: Path, ma_op: str) -> Path:
        calls.append((spec.name, spec.size, ma_op))
        return synth.make_classifier(folder / f"{spec.name}_{spec.size}_{ma_op}.onnx", size=spec.size,
                                     seed=len(spec.name))

    export.calls = calls
    return export


def test_run_torch_onnxruntime_openvino_with_ratios(fake_export):
    cfg = BenchConfig(models=("resnet18", "resnet18-ma"), backends=("torch", "onnxruntime", "openvino", "tensorrt"),
                      sizes=(32,), runs=3, warmup=1, threads=1, command="manet-edge bench ...")
    logs: list[str] = []
    doc = run(cfg, log=logs.append, export=fake_export)
    rows = _rows(doc)
    assert set(rows) == {(m, b, "fp32") for m in ("resnet18", "resnet18-ma") for b in ("torch", "onnxruntime", "openvino")}
    for r in rows.values():
        lat = r["latency_ms"]
        assert lat["n"] == 3 and lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert r["throughput_ips"] > 0 and r["precision"] == "fp32" and r["clock"] == "perf_counter"
    assert rows[("resnet18", "torch", "fp32")]["info"]["torch_threads"] == 1
    assert rows[("resnet18-ma", "openvino", "fp32")]["info"]["ma_op"] == "fused"
    assert rows[("resnet18-ma", "onnxruntime", "fp32")]["info"]["ma_op"] == "fused"
    # one export per (model, MA op form); plain models are exported once for both runtimes
    # one fused export per model serves onnxruntime and OpenVINO alike
    assert sorted(set(fake_export.calls)) == [("resnet18", 32, "fused"), ("resnet18-ma", 32, "fused")]
    ma = {(m["backend"], m["precision"]): m for m in doc["ratios"]["ma_vs_plain"]}
    assert set(ma) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")}
    assert all(m["n"] == 3 and m["plain"] == "resnet18" and m["median"] > 0 for m in ma.values())
    vs = {(m["model"], m["backend"]) for m in doc["ratios"]["backend_vs_torch"]}
    assert vs == {(m, b) for m in ("resnet18", "resnet18-ma") for b in ("onnxruntime", "openvino")}
    assert any(s["what"] == "tensorrt" for s in doc["skipped"]) or any(s["what"].startswith("tensorrt")
                                                                      for s in doc["skipped"])
    assert [f["model"] for f in doc["flops"]] == ["resnet18", "resnet18-ma"]
    assert doc["flops"][0]["true_gflops"] > 0 and doc["flops"][1]["params_m"] == doc["flops"][0]["params_m"]
    env = doc["env"]
    assert env["load_average_start"] is not None and "load_average_end" in env and env["cpu"]["model"]
    assert doc["failed"] == [] and doc["command"] == "manet-edge bench ..."
    assert any("timed 6 targets x 3 rounds" in line for line in logs)


def test_a_target_that_cannot_be_built_is_reported_not_fatal(fake_export, monkeypatch):
    real = targets.prepare

    def prepare(target, **kw):
        if target.backend == "openvino":
            raise RuntimeError("compile failed")
        return real(target, **kw)

    monkeypatch.setattr(latency, "prepare", prepare)
    cfg = BenchConfig(models=("resnet18",), backends=("onnxruntime", "openvino"), sizes=(32,), runs=2, warmup=0)
    doc = run(cfg, log=lambda m: None, export=fake_export)
    assert [r["backend"] for r in doc["results"]] == ["onnxruntime"]
    assert doc["failed"] == [{"what": "resnet18@32/openvino/fp32/b1", "reason": "RuntimeError: compile failed"}]


def test_onnx_files_and_batch(models_dir):
    cfg = BenchConfig(models=(str(models_dir / "classifier.onnx"), str(models_dir / "segmenter.onnx")),
                      backends=("onnxruntime", "torch"), batches=(2,), runs=2, warmup=1)
    doc = run(cfg, log=lambda m: None)
    assert {(r["kind"], r["batch"], r["size"]) for r in doc["results"]} == {("cls", 2, 64), ("seg", 2, 64)}
    assert all("not ONNX files" in s["reason"] for s in doc["skipped"])
    assert doc["ratios"]["ma_vs_plain"] == [] and doc["flops"] == []


def test_pipeline_stage_times(models_dir, image_folder):
    from manet_edge.runtime import create_runner

    files = sorted(image_folder.rglob("*.png"))[:3]
    seg = create_runner(models_dir / "segmenter.onnx", "onnxruntime", threads=1)
    cls = create_runner(models_dir / "classifier.onnx", "onnxruntime", threads=1)
    with seg, cls:
        res = stage_times(seg, cls, files, runs=2, warmup=1)
    assert set(res["ms_per_image"]) == {*STAGES, "total"}
    assert all(res["ms_per_image"][k]["n"] == 6 for k in res["ms_per_image"])
    parts = sum(res["ms_per_image"][k]["mean_ms"] for k in STAGES)
    assert parts == pytest.approx(res["ms_per_image"]["total"]["mean_ms"], abs=1e-3)  # stats rounded to 0.1 us
    assert res["not_classified"] == 0 and res["segmenter_size"] == 64


def test_bench_pipeline_runs_present_backends_and_skips_the_rest(models_dir, image_folder, tmp_path):
    files = sorted(image_folder.rglob("*.png"))[:2]
    cfg = BenchConfig(backends=("onnxruntime", "torch"), pipeline=True, pipeline_models=str(models_dir),
                      pipeline_runs=1, threads=1)
    out = bench_pipeline(cfg, log=lambda m: None, files=files)
    assert [b["backend"] for b in out["backends"]] == ["onnxruntime"]
    row = out["backends"][0]
    assert row["overlapped"]["classified"] == 2 and row["overlapped"]["images_per_s"] > 0
    assert row["overlapped"]["streams"] == plan_streams(row["backend"], 0, None)[0]  # as `infer` runs it
    assert [s["what"] for s in out["skipped"]] == ["pipeline torch"] and "segmenter.pt" in out["skipped"][0]["reason"]
    missing = bench_pipeline(BenchConfig(backends=("onnxruntime",), pipeline_models=str(tmp_path)), lambda m: None,
                             files=files)
    assert missing["backends"] == [] and "lacks the model files" in missing["skipped"][0]["reason"]


def test_a_backend_that_turns_out_missing_is_a_skip(fake_export, monkeypatch):
    from manet_edge.errors import BackendUnavailableError

    real = targets.prepare

    def prepare(target, **kw):
        if target.backend == "openvino":
            raise BackendUnavailableError("openvino", "openvino", "libopenvino.so: cannot open shared object")
        return real(target, **kw)

    monkeypatch.setattr(latency, "prepare", prepare)
    cfg = BenchConfig(models=("resnet18",), backends=("onnxruntime", "openvino"), sizes=(32,), runs=1, warmup=0)
    doc = run(cfg, log=lambda m: None, export=fake_export)
    assert doc["failed"] == []
    assert any(s["what"] == "resnet18@32/openvino/fp32/b1" and "manet-edge[openvino]" in s["reason"]
               for s in doc["skipped"])
