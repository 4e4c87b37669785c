"""Runner interface, capability table, factory, ONNX Runtime and OpenVINO runners (tiny models)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from manet_edge.errors import BackendUnavailableError, BadInputError, ManetEdgeError, ModelError
from manet_edge.runtime import BACKENDS, BackendInfo, create_runner, normalise_precision
from manet_edge.runtime.onnxrt import OnnxRuntimeRunner
from manet_edge.runtime.openvino import OpenVINORunner


def test_capability_table_is_frozen_and_complete():
    assert set(BACKENDS) == {"onnxruntime", "openvino", "torch", "tensorrt"}
    info = BACKENDS["openvino"]
    assert isinstance(info, BackendInfo) and info.precisions == ("fp32", "bf16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.precisions = ("fp16",)  # type: ignore[misc]
    assert [b for b, i in BACKENDS.items() if i.needs_torch] == ["torch"]


def test_cli_backend_choices_match_the_table():
    from manet_edge.commands.infer import Backend

    assert [b.value for b in Backend] == list(BACKENDS)


def test_precision_names():
    assert normalise_precision("f32") == "fp32" and normalise_precision("BF16") == "bf16"
    assert normalise_precision(None) is None
    with pytest.raises(BadInputError, match="choose one of fp32, fp16, bf16, int8"):
        normalise_precision("fp64")
    with pytest.raises(BadInputError, match="openvino' cannot run precision 'int8'; it supports fp32, bf16"):
        normalise_precision("int8", "openvino")


def test_factory_errors(seg_model):
    with pytest.raises(BadInputError, match="unknown backend 'tflite'; choose one of onnxruntime, openvino"):
        create_runner(seg_model, "tflite")
    try:
        import manet_edge.runtime.tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match=r"manet-edge\[trt\]"):
            create_runner(seg_model, "tensorrt")
    else:  # dispatched lazily: the runner is built, tensorrt itself is not imported yet
        import sys

        before = "tensorrt" in sys.modules
        trt = create_runner(seg_model.with_suffix(".engine"), "tensorrt", "fp16")
        assert type(trt).__name__ == "TensorRTRunner" and not trt.is_active
        assert trt.requested_precision == "fp16" and ("tensorrt" in sys.modules) == before
    runner = create_runner(seg_model, "onnxruntime", threads=1)
    assert isinstance(runner, OnnxRuntimeRunner) and not runner.is_active  # constructor only stores


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runner_lifecycle_and_io(backend, seg_model, cls_model):
    seg = create_runner(seg_model, backend, threads=1)
    with pytest.raises(ManetEdgeError, match="activate"):
        seg.infer({"image": np.zeros((1, 1, 64, 64), np.float32)})
    with pytest.raises(ManetEdgeError, match="after activate"):
        _ = seg.card
    with seg:
        assert seg.is_active
        assert seg.input_names == ["image"] and seg.output_names == ["logits"]
        assert seg.input_shapes["image"] == (None, 1, 64, 64)
        assert seg.card.kind == "seg" and seg.precision == "fp32"
        out = seg.infer({"image": np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32)})
        assert out["logits"].shape == (3, 1, 64, 64) and out["logits"].dtype == np.float32
        with pytest.raises(BadInputError, match="expects"):
            seg.infer({"img": np.zeros((1, 1, 64, 64), np.float32)})
        with pytest.raises(BadInputError, match=r"shape \(1, 1, 32, 32\)"):
            seg.infer({"image": np.zeros((1, 1, 32, 32), np.float32)})
        assert seg.describe()["backend"] == backend
    assert not seg.is_active
    with create_runner(cls_model, backend) as cls:
        assert sorted(cls.input_names) == ["image", "mask"]
        out = cls.infer({"image": np.zeros((2, 1, 64, 64)), "mask": np.ones((2, 1, 64, 64))})  # float64 cast
        assert out["logits"].shape == (2, 5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_missing_corrupt_and_cardless_models(backend, tmp_path, seg_model):
    with pytest.raises(ModelError, match="does not exist"):
        create_runner(tmp_path / "none.onnx", backend).activate()
    (tmp_path / "junk.onnx").write_bytes(b"this is not protobuf" * 10)
    with pytest.raises(ModelError, match="junk.onnx"):
        create_runner(tmp_path / "junk.onnx", backend).activate()
    model = onnx.load(str(seg_model))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "nocard.onnx"))
    with pytest.raises(ModelError, match="no 'manet_edge.card' model card"):
        create_runner(tmp_path / "nocard.onnx", backend).activate()


def test_onnxruntime_runs_the_exported_precision(seg_model):
    with pytest.raises(BadInputError, match="exported precision"):
        create_runner(seg_model, "onnxruntime", "fp16").activate()
    with pytest.raises(BadInputError, match="cannot run precision 'bf16'"):
        create_runner(seg_model, "onnxruntime", "bf16")
    with create_runner(seg_model, "onnxruntime", threads=1, spin=False) as r:
        assert r.providers == ["CPUExecutionProvider"] and r.precision == "fp32"
    with pytest.raises(BadInputError, match="device"):
        OnnxRuntimeRunner(seg_model, device="tpu")


def test_openvino_precision_is_explicit_and_read_back(seg_model):
    # OpenVINO's own default on bf16-capable CPUs is bf16: the runner must still run fp32.
    with OpenVINORunner(seg_model) as r:
        assert r.precision == "fp32"
        assert r._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"


def test_openvino_bf16(seg_model):
    from manet_edge.runtime.openvino import cpu_capabilities

    if "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no bf16 support")
    x = np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32)
    with OpenVINORunner(seg_model, precision="bf16") as r16, OpenVINORunner(seg_model, precision="f32") as r32:
        assert r16.precision == "bf16" and r32.precision == "fp32"
        a, b = r16.infer({"image": x})["logits"], r32.infer({"image": x})["logits"]
        assert np.abs(a - b).max() < 0.1


def test_openvino_bf16_unsupported_is_an_error(seg_model, monkeypatch):
    import openvino

    real = openvino.Core

    class NoBf16Core:
        def __init__(self):
            self._core = real()

        def get_property(self, device, name):
            value = self._core.get_property(device, name)
            return [c for c in value if c != "BF16"] if name == "OPTIMIZATION_CAPABILITIES" else value

        def __getattr__(self, name):
            return getattr(self._core, name)

    monkeypatch.setattr(openvino, "Core", NoBf16Core)
    with pytest.raises(BadInputError, match="bf16 is not supported by this CPU"):
        OpenVINORunner(seg_model, precision="bf16").activate()
    with OpenVINORunner(seg_model, precision="fp32") as r:
        assert r.precision == "fp32"


# -- loaders apart from runners --------------------------------------------------------------------

def test_onnxruntime_runner_from_bytes_proto_and_session_match_the_file(seg_model):
    import onnx

    from manet_edge.runtime.onnxrt import OnnxRuntimeRunner, session_from_onnx

    feed = {"image": np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32)}
    with OnnxRuntimeRunner(seg_model) as ref:
        want = ref.infer(feed)["logits"]
    proto = onnx.load(str(seg_model))
    for source in (proto, proto.SerializeToString(), session_from_onnx(seg_model, threads=1)):
        with OnnxRuntimeRunner(source) as r:
            assert r.in_memory and r.card.kind == "seg"
            np.testing.assert_array_equal(r.infer(feed)["logits"], want)


def test_onnxruntime_runner_without_a_card_only_when_asked(seg_model):
    import onnx

    from manet_edge.errors import ModelError
    from manet_edge.runtime.onnxrt import OnnxRuntimeRunner

    proto = onnx.load(str(seg_model))
    del proto.metadata_props[:]
    with pytest.raises(ModelError, match="no 'manet_edge.card' model card"):
        OnnxRuntimeRunner(proto).activate()
    with OnnxRuntimeRunner(proto, require_card=False) as r:
        assert r.precision == "fp32" and r.input_names == ["image"]
        with pytest.raises(ModelError, match="did not provide a model card"):
            r.card
        assert r.infer({"image": np.zeros((1, 1, 64, 64), np.float32)})["logits"].shape == (1, 1, 64, 64)


def test_openvino_runner_from_an_in_memory_model_matches_the_file(seg_model):
    pytest.importorskip("openvino")
    import onnx

    from manet_edge.runtime.openvino import OpenVINORunner, compile_config, compile_model

    feed = {"image": np.random.default_rng(1).random((1, 1, 64, 64), dtype=np.float32)}
    with OpenVINORunner(seg_model, threads=1) as ref:
        want = ref.infer(feed)["logits"]
    with OpenVINORunner(onnx.load(str(seg_model)), threads=1) as r:
        assert r.card.kind == "seg"
        np.testing.assert_array_equal(r.infer(feed)["logits"], want)
    compiled = compile_model(str(seg_model), compile_config("fp32", threads=1))
    np.testing.assert_array_equal(np.asarray(compiled(feed)[compiled.output(0)]), want)
    assert compile_config("fp32", threads=2, streams=3) == {
        "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 3,
        "INFERENCE_NUM_THREADS": 6}
