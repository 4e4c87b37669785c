"""Pure build planning: TensorRT 10 vs 11 dispatch, batch profiles, default paths."""

from __future__ import annotations

import pytest

from manet_edge.export.engine import (
    BuildPlan,
    EngineBuildError,
    default_engine_path,
    make_profile,
    parse_trt_version,
    plan_build,
    profile_shapes,
)
from manet_edge.runtime.engine_manifest import BatchProfile


def test_parse_versions():
    assert parse_trt_version("10.3.0.30") == (10, 3, 0)
    assert parse_trt_version("11.1") == (11, 1, 0)
    with pytest.raises(EngineBuildError):
        parse_trt_version("latest")


@pytest.mark.parametrize("version", ["10.3.0", "10.15.1"])
def test_trt10_fp32_onnx(version):
    fp32 = plan_build(version, "fp32", False, False)
    assert (fp32.strongly_typed, fp32.builder_flags, fp32.clear_flags) == (False, (), ("TF32",))
    fp16 = plan_build(version, "fp16", False, False)
    assert (fp16.strongly_typed, fp16.builder_flags, fp16.network_flags) == (False, ("FP16",), ())


def test_trt10_fp16_onnx_is_built_strongly_typed_without_flags():
    plan = plan_build("10.3.0", "fp16", onnx_is_fp16=True, onnx_has_qdq=False)
    assert plan.strongly_typed and plan.network_flags == ("STRONGLY_TYPED",) and plan.builder_flags == ()


def test_trt10_int8_needs_qdq():
    plan = plan_build("10.3.0", "int8", onnx_is_fp16=False, onnx_has_qdq=True)
    assert plan.builder_flags == ("INT8", "FP16") and not plan.strongly_typed
    with pytest.raises(EngineBuildError, match="Q/DQ ONNX") as exc:
        plan_build("10.3.0", "int8", False, False)
    assert "manet-edge export --precision int8" in str(exc.value)


@pytest.mark.parametrize("version", ["11.0.0", "11.4.0"])
def test_trt11_is_always_strongly_typed(version):
    for prec, fp16, qdq in (("fp32", False, False), ("fp16", True, False), ("int8", False, True)):
        plan = plan_build(version, prec, fp16, qdq)
        assert isinstance(plan, BuildPlan)
        assert plan.strongly_typed and plan.network_flags == ("STRONGLY_TYPED",)
        assert "FP16" not in plan.builder_flags and "INT8" not in plan.builder_flags


def test_trt11_fp16_from_fp32_onnx_is_a_clear_error():
    with pytest.raises(EngineBuildError) as exc:
        plan_build("11.1.0", "fp16", onnx_is_fp16=False, onnx_has_qdq=False)
    text = str(exc.value)
    assert "removed the FP16 builder flag" in text and "*.fp16.onnx" in text and "AutoCast" in text


def test_trt11_int8_without_qdq_is_a_clear_error():
    with pytest.raises(EngineBuildError, match=r"\*\.int8\.onnx"):
        plan_build("11.1.0", "int8", onnx_is_fp16=False, onnx_has_qdq=False)


def test_newer_major_is_treated_as_11_with_a_note():
    plan = plan_build("12.0.0", "fp32", False, False)
    assert plan.strongly_typed and any("newer" in n for n in plan.notes)


@pytest.mark.parametrize("args, match", [
    (("8.6.1", "fp32", False, False), "too old"),
    (("10.3.0", "fp64", False, False), "unknown precision"),
    (("10.3.0", "fp32", True, False), "already fp16"),
    (("10.3.0", "fp16", False, True), "QuantizeLinear"),
    (("11.1.0", "fp32", False, True), "QuantizeLinear"),
])
def test_inconsistent_requests(args, match):
    with pytest.raises(EngineBuildError, match=match):
        plan_build(*args)


def test_dla_rules():
    plan = plan_build("10.3.0", "fp16", False, False, dla=True)
    assert plan.builder_flags == ("FP16", "GPU_FALLBACK")
    with pytest.raises(EngineBuildError, match="FP16 and INT8 only"):
        plan_build("10.3.0", "fp32", False, False, dla=True)
    with pytest.raises(EngineBuildError, match="no DLA support"):
        plan_build("11.4.0", "fp16", True, False, dla=True)
    # 11.4.1 restores DLA on AGX Orin (JetPack 7.2.2+), strongly typed: only the fallback flag is set
    plan = plan_build("11.4.1", "fp16", True, False, dla=True)
    assert plan.strongly_typed and plan.builder_flags == ("GPU_FALLBACK",)


def test_profiles_are_narrow_by_default():
    assert make_profile() == BatchProfile(1, 1, 1)
    assert make_profile(batch=8) == BatchProfile(8, 8, 8)
    assert make_profile(batch=8).narrow
    assert make_profile(min_batch=1, max_batch=16) == BatchProfile(1, 16, 16)
    assert make_profile(min_batch=1, opt_batch=4, max_batch=16) == BatchProfile(1, 4, 16)
    assert make_profile(opt_batch=4, max_batch=8) == BatchProfile(1, 4, 8)
    with pytest.raises(EngineBuildError, match="not both"):
        make_profile(batch=4, max_batch=8)
    with pytest.raises(EngineBuildError, match="min <= opt <= max"):
        make_profile(min_batch=8, opt_batch=2, max_batch=16)


def test_profile_shapes_only_vary_batch():
    shapes = profile_shapes({"image": ["N", 1, 224, 224], "mask": [-1, 1, 224, 224]}, BatchProfile(1, 4, 8))
    assert shapes["image"] == ((1, 1, 224, 224), (4, 1, 224, 224), (8, 1, 224, 224))
    assert shapes["mask"][2] == (8, 1, 224, 224)
    with pytest.raises(EngineBuildError, match="fixed H x W"):
        profile_shapes({"image": ["N", 1, "H", 224]}, BatchProfile(1, 1, 1))
    with pytest.raises(EngineBuildError, match="fixed batch of 1"):
        profile_shapes({"image": [1, 1, 224, 224]}, BatchProfile(1, 4, 8))
    assert profile_shapes({"image": [2, 1, 8, 8]}, BatchProfile(2, 2, 2))["image"][0] == (2, 1, 8, 8)


def test_default_engine_paths(tmp_path):
    assert default_engine_path(tmp_path / "classifier.onnx", "fp16") == tmp_path / "classifier.fp16.engine"
    assert default_engine_path(tmp_path / "classifier.fp16.onnx", "fp16") == tmp_path / "classifier.fp16.engine"
    assert default_engine_path(tmp_path / "seg.int8.onnx", "int8") == tmp_path / "seg.int8.engine"
