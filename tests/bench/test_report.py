"""Reports: Markdown tables, PNG plots, JSON, and --compare against an earlier results file."""

from __future__ import annotations

import copy
import json

import pytest

from manet_edge.benchmarks import report
from manet_edge.errors import BadInputError


def _lat(median: float) -> dict:
    return {"n": 3, "median_ms": median, "p90_ms": median * 1.1, "p99_ms": median * 1.2, "min_ms": median * 0.9,
            "max_ms": median * 1.3, "mean_ms": median, "std_ms": 0.1}


def _row(model: str, backend: str, precision: str, median: float, variant: str) -> dict:
    return {"label": f"{model}@64/{backend}/{precision}/b1", "model": model, "arch": "resnet18", "variant": variant,
            "kind": "cls", "size": 64, "batch": 1, "backend": backend, "precision_requested": precision,
            "precision": precision, "device": "cpu", "clock": "perf_counter", "info": {},
            "latency_ms": _lat(median), "throughput_ips": 1e3 / median}


def _ratio(**kw) -> dict:
    base = {"model": "resnet18-ma", "plain": "resnet18", "size": 64, "batch": 1, "variant": "ma", "n": 3,
            "median": 1.05, "p10": 1.01, "p90": 1.09, "ratio_of_medians": 1.04, "a": "x", "b": "y"}
    base.update(kw)
    return base


@pytest.fixture
def doc() -> dict:
    return {
        "schema": 1, "command": "manet-edge bench --models resnet18,resnet18-ma --sizes 64", "elapsed_s": 1.0,
        "config": {"warmup": 1, "runs": 3},
        "env": {"machine": "cpu-2core-test", "cpu": {"model": "Test CPU", "logical_cores": 2, "physical_cores": 2,
                                                   "usable_cores": 2, "isa": ["avx2"]},
                "load_average_start": [1.0, 1.0, 1.0], "load_average_end": [2.0, 1.0, 1.0],
                "gpu": {"gpus": []}, "libraries": {"onnxruntime": "1.32.0"}, "jetson": None},
        "results": [_row("resnet18", "torch", "fp32", 20.0, "plain"), _row("resnet18-ma", "torch", "fp32", 21.0, "ma"),
                    _row("resnet18", "openvino", "bf16", 5.0, "plain"),
                    _row("resnet18-ma", "openvino", "bf16", 5.5, "ma")],
        "ratios": {"ma_vs_plain": [_ratio(backend="torch", precision="fp32"),
                                   _ratio(backend="openvino", precision="bf16", median=1.1)],
                   "backend_vs_torch": [{"model": "resnet18", "size": 64, "batch": 1, "backend": "openvino",
                                         "precision": "bf16", "median": 0.25, "p10": 0.2, "p90": 0.3, "n": 3,
                                         "ratio_of_medians": 0.25}]},
        "skipped": [{"what": "tensorrt", "reason": "tensorrt is not installed"}], "failed": [],
        "notes": ["a note"], "power": "not a Jetson",
        "flops": [{"model": "resnet18", "size": 64, "params_m": 11.17, "thop_ops_m": 568.0, "paper_ops_m": None,
                   "true_gflops": 1.13}, {"model": "resnet18-ma", "size": 64, "params_m": 11.17,
                                          "thop_ops_m": 568.1, "paper_ops_m": None, "true_gflops": 1.131}],
        "pipeline": {"backends": [{"backend": "onnxruntime", "precision": "fp32", "images": 2, "runs": 1,
                                   "segmenter_size": 64, "classifier_size": 64,
                                   "segmenter": {"model": "seg"}, "classifier": {"model": "cls"},
                                   "ms_per_image": {k: _lat(1.0) for k in ("decode", "preprocess", "segment",
                                                                          "postprocess", "classify", "total")},
                                   "overlapped": {"images_per_s": 50.0}}],
                     "skipped": [{"what": "pipeline torch", "reason": "no .pt"}]},
    }


def test_markdown_has_every_section(doc):
    md = report.markdown(doc)
    assert "manet-edge bench --models resnet18,resnet18-ma --sizes 64" in md
    assert "| resnet18 | 64 | 1 | openvino | bf16 | perf_counter | 5.00 | 5.50 | 6.00 | 4.50 | 6.50 | 200.00 | 226.0 | 0.250 |" in md
    assert "| resnet18-ma | 64 | 1 | openvino | bf16 | 1.100 | 1.010-1.090 | 1.040 | 3 | 1.0009 |" in md
    assert "start 1.0 / 1.0 / 1.0, end 2.0 / 1.0 / 1.0" in md and "Test CPU" in md
    assert "| onnxruntime | fp32 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 50.00 |" in md
    assert "| resnet18 | 64 | 11.17 | 568.00 |  | 1.130 |" in md
    assert "skipped tensorrt: tensorrt is not installed" in md and "a note" in md


def test_markdown_shows_jetson_state_and_power(doc):
    doc["env"]["jetson"] = {"board": "NVIDIA Jetson Orin Nano", "l4t": "R36", "nvpmodel": {"mode": "15W", "id": 1},
                            "clocks_locked": False, "warnings": ["clocks are not locked: run `sudo jetson_clocks`"]}
    doc["results"][0]["power"] = {"mean_mw": 6000.0, "mj_per_image": 120.0}
    md = report.markdown(doc)
    assert "nvpmodel 15W; clocks locked: False" in md and "**warning**: clocks are not locked" in md
    assert "| 120.0 |" in md


def test_write_all_json_markdown_and_pngs(doc, tmp_path):
    written = report.write_all(doc, tmp_path / "out", "run1")
    names = sorted(p.name for p in written)
    assert names == ["run1.json", "run1.md", "run1_latency.png", "run1_ma_overhead.png"]
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert report.load(tmp_path / "out" / "run1.json")["results"][0]["model"] == "resnet18"
    empty = copy.deepcopy(doc)
    empty["results"], empty["ratios"] = [], {"ma_vs_plain": [], "backend_vs_torch": []}
    assert [p.name for p in report.write_all(empty, tmp_path / "e")] == ["bench.json", "bench.md"]


def test_compare(doc, tmp_path):
    old = copy.deepcopy(doc)
    old["results"][0]["latency_ms"]["median_ms"] = 25.0
    old["results"].append(_row("resnet18", "onnxruntime", "fp32", 3.0, "plain"))
    old["ratios"]["ma_vs_plain"][0]["median"] = 1.2
    (tmp_path / "old.json").write_text(json.dumps(old))
    diff = report.compare(old, doc)
    first = diff["latency"][0]
    assert (first["model"], first["backend"], first["old_ms"], first["new_ms"], first["change_pct"]) == \
        ("resnet18", "torch", 25.0, 20.0, -20.0)
    assert len(diff["latency"]) == 4
    assert diff["ma_vs_plain"][0]["old"] == 1.2 and diff["ma_vs_plain"][0]["new"] == 1.05
    assert diff["only_in_old"] == ["resnet18 64 1 onnxruntime fp32"]
    written = report.write_all(doc, tmp_path / "new", compare_with=tmp_path / "old.json")
    text = (tmp_path / "new" / "bench_compare.md").read_text()
    assert "| resnet18 | 64 | 1 | torch | fp32 | 25.00 | 20.00 | -20.0% |" in text
    assert json.loads((tmp_path / "new" / "bench.json").read_text())["compare"]["with"].endswith("old.json")
    assert written[0].name == "bench_compare.md"


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"rows": []}')
    with pytest.raises(BadInputError, match="not a manet-edge bench results file"):
        report.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{broken")
    with pytest.raises(BadInputError, match="cannot read"):
        report.load(tmp_path / "y.json")


def test_markdown_has_no_python_reprs(doc):
    doc["env"]["threads"] = {"torch_threads": 2, "onnxruntime": None}
    doc["power"] = {"source": "jtop", "rails": ["VDD_IN", "VDD_CPU"]}
    md = report.markdown(doc)
    assert "{'" not in md and "['" not in md and "[1.0" not in md, md
    assert "- threads: torch_threads=2, onnxruntime=n/a" in md and "- power: source=jtop, rails=VDD_IN / VDD_CPU" in md
