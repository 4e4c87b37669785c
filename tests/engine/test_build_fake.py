"""build_engine orchestration against a fake ``tensorrt`` (no GPU): what our code sets and writes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from manet_edge.errors import BackendUnavailableError, OutputExistsError
from manet_edge.export.engine import EngineBuildError, build_engine, make_profile
from manet_edge.runtime.engine_manifest import manifest_path, read_manifest, sha256_file


def _build(onnx, out=None, messages=None, **kw):
    messages = [] if messages is None else messages
    return build_engine(onnx, out, echo=messages.append, **kw)


def test_trt10_fp16_build_sets_flags_profile_cache_and_writes_manifest(fake_trt, tiny_onnx, fake_env, tmp_path):
    trt = fake_trt("10.3.0")
    msgs: list[str] = []
    res = _build(tiny_onnx, precision="fp16", workspace_mb=256, messages=msgs)
    out = tmp_path / "classifier.fp16.engine"
    assert res.engine_path == out and out.read_bytes().startswith(b"FAKEENGINE") and not res.skipped
    assert trt.rec.flags_set == ["FP16"] and trt.rec.network_flags == 0
    assert trt.rec.verbosity == "detailed" and trt.rec.pool_limits == {"workspace": 256 << 20}
    assert trt.rec.profiles == [{"image": ((1, 1, 8, 8),) * 3, "mask": ((1, 1, 8, 8),) * 3}]
    assert trt.rec.monitor is not None and any("Building engine" in m for m in msgs)
    cache = tmp_path / "timing-trt10_3_0-sm89.cache"
    assert cache.read_bytes() == b"|timed"
    m = read_manifest(out)
    assert m == res.manifest
    assert m.precision == "fp16" and m.engine_sha256 == sha256_file(out) and m.onnx_file == "classifier.onnx"
    assert m.onnx_sha256 == sha256_file(tiny_onnx) and m.env.tensorrt_version == "10.3.0"
    assert m.env.compute_capability == "8.9" and m.env.gpu_name == "Fake RTX 4090"
    assert m.input_shapes == {"image": [1, 8, 8], "mask": [1, 8, 8]} and m.layer_precisions == {"fp16": 2}
    assert m.ma_op == "plain-ops" and m.card["model_name"] == "tiny-ma"
    assert m.build["builder_flags"] == ["FP16"] and m.build["typing"] == "weak"
    assert res.report.ok and any("precision check OK" in x for x in msgs)


def test_timing_cache_is_reused_on_the_next_build(fake_trt, tiny_onnx, tmp_path):
    trt = fake_trt("10.3.0")
    cache = tmp_path / "shared.cache"
    _build(tiny_onnx, tmp_path / "a.engine", timing_cache=cache)
    assert trt.rec.cache_in == b"" and cache.read_bytes() == b"|timed"
    res = _build(tiny_onnx, tmp_path / "b.engine", timing_cache=cache)
    assert trt.rec.cache_in == b"|timed" and cache.read_bytes() == b"|timed|timed"
    assert res.manifest.build["timing_cache_reused"] is True


def test_incompatible_timing_cache_starts_fresh(fake_trt, tiny_onnx, tmp_path):
    trt = fake_trt("10.3.0")
    cache = tmp_path / "old.cache"
    cache.write_bytes(b"from-another-gpu")
    trt.rec.cache_compatible = False
    msgs: list[str] = []
    res = _build(tiny_onnx, tmp_path / "a.engine", timing_cache=cache, messages=msgs)
    assert any("starting a fresh one" in m for m in msgs) and res.manifest.build["timing_cache_reused"] is False
    assert cache.read_bytes() == b"|timed"


def test_silent_fp32_engine_is_refused(fake_trt, tiny_onnx, tmp_path):
    trt = fake_trt("10.3.0")
    trt.rec.force_layer_type = "Float"  # TensorRT ignored the FP16 hint
    out = tmp_path / "x.engine"
    with pytest.raises(EngineBuildError, match="refusing to write") as exc:
        _build(tiny_onnx, out, precision="fp16")
    assert "0% of conv/gemm layers" in str(exc.value)
    assert not out.exists() and not manifest_path(out).exists()


def test_trt10_int8_from_qdq_onnx(fake_trt, onnx_factory, tmp_path):
    trt = fake_trt("10.3.0")
    res = _build(onnx_factory("c.int8.onnx", qdq=True), precision="int8", calibration_data=onnx_factory("calib.onnx"))
    assert trt.rec.flags_set == ["INT8", "FP16"] and res.manifest.layer_precisions == {"int8": 2}
    assert res.engine_path == tmp_path / "c.int8.engine"
    assert res.manifest.calibration_sha256 == sha256_file(tmp_path / "calib.onnx")


def test_int8_calibration_hash_comes_from_the_card_extra(fake_trt, onnx_factory):
    """export.quantize stores calibration_sha256 in the card's `extra`; the manifest picks it up."""
    fake_trt("10.3.0")
    card = {"kind": "cls", "model_name": "tiny", "input_size": 8, "precision": "int8",
            "extra": {"calibration_sha256": "ab" * 32, "calibration_images": 4}}
    res = _build(onnx_factory("q.int8.onnx", qdq=True, card=card), precision="int8")
    assert res.manifest.calibration_sha256 == "ab" * 32


def test_trt11_strongly_typed_builds(fake_trt, onnx_factory):
    trt = fake_trt("11.1.0")
    res = _build(onnx_factory("c.fp16.onnx", fp16=True), precision="fp16")
    assert trt.rec.network_flags == 1 << 1 and trt.rec.flags_set == []
    assert res.manifest.build["typing"] == "strong" and res.manifest.layer_precisions == {"fp16": 2}
    res32 = _build(onnx_factory("c.onnx"), precision="fp32", rebuild=True)
    assert "TF32" in trt.rec.flags_cleared and res32.manifest.precision == "fp32"


def test_trt11_fp16_from_fp32_onnx_fails_before_building(fake_trt, tiny_onnx):
    trt = fake_trt("11.1.0")
    with pytest.raises(EngineBuildError, match="removed the FP16 builder flag"):
        _build(tiny_onnx, precision="fp16")
    assert trt.rec.builds == 0


def test_range_profile(fake_trt, tiny_onnx, tmp_path):
    trt = fake_trt("10.3.0")
    res = _build(tiny_onnx, tmp_path / "r.engine", profile=make_profile(min_batch=1, opt_batch=4, max_batch=8))
    assert trt.rec.profiles[-1]["image"] == ((1, 1, 8, 8), (4, 1, 8, 8), (8, 1, 8, 8))
    assert res.manifest.profile.max == 8


def test_existing_engine_up_to_date_is_skipped_else_needs_rebuild(fake_trt, tiny_onnx, tmp_path, fake_cuda):
    trt = fake_trt("10.3.0")
    out = tmp_path / "e.engine"
    _build(tiny_onnx, out)
    msgs: list[str] = []
    again = _build(tiny_onnx, out, messages=msgs)
    assert again.skipped and trt.rec.builds == 1 and any("up to date" in m for m in msgs)
    with pytest.raises(OutputExistsError, match="--rebuild") as exc:
        _build(tiny_onnx, out, precision="fp16")
    assert "built in fp32, fp16 requested" in str(exc.value)
    fake_cuda.cc = "8.7"  # another GPU architecture
    with pytest.raises(OutputExistsError, match="GPU compute capability"):
        _build(tiny_onnx, out)
    res = _build(tiny_onnx, out, rebuild=True)
    assert trt.rec.builds == 2 and read_manifest(out).env.compute_capability == "8.7" and not res.skipped


def test_dla_settings(fake_trt, tiny_onnx, tmp_path):
    trt = fake_trt("10.3.0")
    with pytest.raises(EngineBuildError, match="0 DLA core"):
        _build(tiny_onnx, tmp_path / "d.engine", precision="fp16", dla_core=0)
    trt.Builder.num_DLA_cores = 2
    res = _build(tiny_onnx, tmp_path / "d.engine", precision="fp16", dla_core=1)
    assert (trt.rec.device_type, trt.rec.dla) == ("dla", 1)
    assert trt.rec.flags_set[-2:] == ["FP16", "GPU_FALLBACK"] and res.manifest.build["dla_core"] == 1


def test_parse_failure_is_reported(fake_trt, tiny_onnx):
    fake_trt("10.3.0").rec.parse_ok = False
    with pytest.raises(EngineBuildError, match="(?s)could not parse.*unsupported node"):
        _build(tiny_onnx)


def test_local_function_recorded_in_manifest(fake_trt, onnx_factory):
    fake_trt("10.3.0")
    res = _build(onnx_factory(local_function="MaskAttention"))
    assert res.manifest.ma_op == "local-function"


def test_missing_tensorrt_names_the_extra(no_tensorrt, tiny_onnx):
    with pytest.raises(BackendUnavailableError, match=r"pip install 'manet-edge\[trt\]'"):
        _build(tiny_onnx)


def test_rebuild_from_manifest(fake_trt, tiny_onnx, tmp_path, fake_cuda):
    from manet_edge.export.engine import rebuild_from_manifest

    trt = fake_trt("10.3.0")
    out = tmp_path / "e.engine"
    _build(tiny_onnx, out, precision="fp16", profile=make_profile(batch=2))
    fake_cuda.cc = "8.6"
    res = rebuild_from_manifest(out, echo=lambda m: None)
    assert trt.rec.builds == 2 and res.manifest.precision == "fp16" and res.manifest.profile.opt == 2
    assert json.loads(manifest_path(out).read_text())["env"]["compute_capability"] == "8.6"
    assert dataclasses.asdict(res.manifest.profile) == {"min": 2, "opt": 2, "max": 2}


def test_plugin_layer_changes_recorded_ma_implementation(fake_trt, onnx_factory):
    trt = fake_trt("10.8.0")
    trt.rec.extra_layers = [{"Name": "MaskAttention_0", "LayerType": "PluginV3", "Inputs": [], "Outputs": []}]
    msgs: list[str] = []
    res = _build(onnx_factory(local_function="MaskAttention"), messages=msgs)
    assert res.manifest.ma_op == "plugin" and any("plugin layer" in m for m in msgs)
