"""Model specs, targets, grouping and skip logic (backends/precisions missing on the machine)."""

from __future__ import annotations

import pytest

from manet_edge.benchmarks import latency, targets
from manet_edge.benchmarks.latency import BenchConfig, groups, plan
from manet_edge.benchmarks.targets import ModelSpec, parse_models, resolve_ma_op
from manet_edge.errors import BadInputError


def test_parse_models_names_sizes_and_pins():
    notes: list[str] = []
    specs = parse_models(["resnet18", "resnet18-ma@128", "resnet18"], [32, 64], notes)
    assert [s.label for s in specs] == ["resnet18@32", "resnet18@64", "resnet18-ma@128"]  # duplicates dropped
    assert specs[2].arch == "resnet18" and specs[2].variant == "ma" and specs[0].variant == "plain"
    assert ModelSpec("vgg16-cbam", 64).variant == "cbam"
    with pytest.raises(BadInputError, match="unknown model 'resnet19'.*resnet18-ma"):
        parse_models(["resnet19"], [32], notes)
    with pytest.raises(BadInputError, match="integer"):
        parse_models(["resnet18@big"], [32], notes)
    with pytest.raises(BadInputError, match="does not exist"):
        parse_models(["missing.onnx"], [32], notes)


def test_defaults_fall_back_to_the_zoo_config_when_bundled_models_are_absent(monkeypatch, tmp_path, models_dir):
    import manet_edge.assets as assets

    monkeypatch.setattr(assets, "default_models_dir", lambda: tmp_path)
    notes: list[str] = []
    specs = parse_models(["defaults"], [512], notes)
    assert [s.label for s in specs] == ["resnet18@192", "resnet18-ma@192"]
    assert "no segmenter is timed" in notes[0] and "random weights" in notes[0]
    monkeypatch.setattr(assets, "default_models_dir", lambda: models_dir)
    specs = parse_models(["defaults"], [512], [])
    assert [(s.kind, s.size, s.path.name) for s in specs] == [("seg", 64, "segmenter.onnx"), ("cls", 64, "classifier.onnx")]


def test_plan_skips_missing_backends_and_unsupported_precisions(monkeypatch):
    monkeypatch.setattr(latency, "backend_unavailable",
                        lambda b: "openvino is not installed (pip install 'manet-edge[openvino]')" if b == "openvino" else
                        ("TensorRT needs an NVIDIA GPU and none was found" if b == "tensorrt" else None))
    cfg = BenchConfig(models=("resnet18", "resnet18-ma"), backends=("tensorrt", "openvino", "onnxruntime", "torch"),
                      precisions=("fp32", "bf16"), sizes=(32,), batches=(1, 2), runs=1, warmup=0)
    got, skips = plan(cfg, [])
    reasons = {s.what: s.reason for s in skips}
    assert "pip install 'manet-edge[openvino]'" in reasons["openvino"]
    assert "NVIDIA GPU" in reasons["tensorrt"]
    assert "fp32" in reasons["torch bf16"] and "onnxruntime bf16" in reasons
    # backends in canonical order, then precision, model, batch
    assert [t.label for t in got] == [
        "resnet18@32/torch/fp32/b1", "resnet18@32/torch/fp32/b2", "resnet18-ma@32/torch/fp32/b1",
        "resnet18-ma@32/torch/fp32/b2", "resnet18@32/onnxruntime/fp32/b1", "resnet18@32/onnxruntime/fp32/b2",
        "resnet18-ma@32/onnxruntime/fp32/b1", "resnet18-ma@32/onnxruntime/fp32/b2"]
    keys = [k for k, _ in groups(got)]
    assert keys == [("resnet18", 32, 1), ("resnet18", 32, 2)]
    assert all(len(members) == 4 for _, members in groups(got))


def test_bf16_skipped_on_a_cpu_without_it(monkeypatch):
    import manet_edge.runtime.openvino as ov_runner

    monkeypatch.setattr(ov_runner, "cpu_capabilities", lambda: ["FP32", "INT8"])
    reason = targets.precision_unavailable("openvino", "bf16")
    assert "no bf16 support" in reason and "FP32, INT8" in reason
    assert targets.precision_unavailable("openvino", "fp32") is None
    assert "supports fp32, bf16" in targets.precision_unavailable("openvino", "int8")
    assert "Q/DQ" in targets.precision_unavailable("tensorrt", "int8")


def test_onnx_file_precision_and_torch(cls_model):
    spec = parse_models([str(cls_model)], [512], [])[0]
    assert spec.size == 64 and spec.kind == "cls" and spec.path == cls_model
    assert targets.precision_unavailable("onnxruntime", "fp32", spec) is None
    assert "exported precision (fp32)" in targets.precision_unavailable("onnxruntime", "fp16", spec)
    assert "not ONNX files" in targets.precision_unavailable("torch", "fp32", spec)


def test_backend_unavailable_when_the_library_is_missing(monkeypatch):
    monkeypatch.setattr(targets, "_has_module", lambda name: name != "openvino")
    assert "openvino is not installed" in targets.backend_unavailable("openvino")
    assert targets.backend_unavailable("onnxruntime") is None
    monkeypatch.setattr(targets, "_cuda_gpu_present", lambda: False)
    monkeypatch.setattr(targets, "_has_module", lambda name: True)
    assert "NVIDIA GPU" in targets.backend_unavailable("tensorrt")
    with pytest.raises(BadInputError, match="unknown backend"):
        targets.backend_unavailable("tflite")


def test_ma_op_auto_is_inline_for_openvino_only():
    assert resolve_ma_op("auto", "openvino") == "fused"
    assert resolve_ma_op("auto", "onnxruntime") == "fused" and resolve_ma_op("auto", "tensorrt") == "fused"
    assert resolve_ma_op("inline", "onnxruntime") == "inline"
    with pytest.raises(BadInputError):
        resolve_ma_op("folded", "openvino")


@pytest.mark.parametrize("kw, match", [
    ({"runs": 0}, "runs must be >= 1"), ({"warmup": -1}, "warmup"), ({"models": ()}, "at least one model"),
    ({"sizes": (4,)}, ">= 8 px"), ({"batches": (0,)}, "batch"), ({"device": "tpu"}, "device"),
    ({"threads": 0}, "threads")])
def test_config_validation(kw, match):
    with pytest.raises(BadInputError, match=match):
        BenchConfig(**kw)


def test_unknown_backend_in_plan():
    with pytest.raises(BadInputError, match="unknown backend.*tflite"):
        plan(BenchConfig(backends=("tflite",)), [])
