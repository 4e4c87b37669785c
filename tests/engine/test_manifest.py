"""Engine manifest: JSON round trip, compatibility rules, clear errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from manet_edge.errors import ModelError
from manet_edge.runtime.engine_manifest import (
    BatchProfile,
    BuildEnv,
    EngineManifest,
    check_compatible,
    errors_only,
    manifest_path,
    mismatch_message,
    read_manifest,
    write_manifest,
)


def _manifest(env: BuildEnv, **kw) -> EngineManifest:
    base = dict(engine_file="classifier.fp16.engine", engine_sha256="e" * 64, onnx_file="classifier.onnx",
                onnx_sha256="a" * 64, precision="fp16", profile=BatchProfile(1, 1, 1),
                input_shapes={"image": [1, 224, 224], "mask": [1, 224, 224]}, env=env, ma_op="local-function",
                calibration_sha256=None, build={"typing": "weak", "builder_flags": ["FP16"]},
                layer_precisions={"fp16": 40}, card={"kind": "cls", "model_name": "resnet18-ma", "input_size": 224},
                built_at="2025-01-01T00:00:00+00:00", build_seconds=12.5, manet_edge_version="0.1.0")
    base.update(kw)
    return EngineManifest(**base)


def test_round_trip_through_file(tmp_path, fake_env):
    m = _manifest(fake_env, calibration_sha256="c" * 64, profile=BatchProfile(1, 4, 8))
    engine = tmp_path / "classifier.fp16.engine"
    path = write_manifest(engine, m)
    assert path == manifest_path(engine) == tmp_path / "classifier.fp16.engine.manifest.json"
    back = read_manifest(engine)
    assert back == m
    assert isinstance(back.profile, BatchProfile) and isinstance(back.env, BuildEnv)
    assert json.loads(path.read_text())["env"]["compute_capability"] == "8.9"


def test_missing_and_corrupt_manifest_are_named_errors(tmp_path, fake_env):
    engine = tmp_path / "x.engine"
    with pytest.raises(ModelError, match="no engine manifest"):
        read_manifest(engine)
    manifest_path(engine).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_manifest(engine)
    data = json.loads(_manifest(fake_env).to_json())
    del data["env"]
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="lacks"):
        read_manifest(engine)
    data = json.loads(_manifest(fake_env).to_json())
    data["schema_version"] = 99
    manifest_path(engine).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="schema 99"):
        read_manifest(engine)


def test_invalid_values_rejected(fake_env):
    with pytest.raises(ModelError, match="precision"):
        _manifest(fake_env, precision="fp64")
    with pytest.raises(ModelError, match="ma_op"):
        _manifest(fake_env, ma_op="magic")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        BatchProfile(4, 2, 8)
    with pytest.raises(ValueError, match=">= 1"):
        BatchProfile(0, 1, 1)


def test_same_machine_is_compatible(fake_env):
    assert check_compatible(_manifest(fake_env), fake_env, onnx_sha256="a" * 64) == []


@pytest.mark.parametrize("change, what", [
    ({"tensorrt_version": "10.8.0"}, "TensorRT version"),
    ({"tensorrt_version": "11.1.0"}, "TensorRT version"),
    ({"compute_capability": "8.7", "gpu_name": "Orin"}, "GPU compute capability"),
    ({"cuda_runtime_version": "13.0"}, "CUDA major version"),
])
def test_mismatches_are_errors(fake_env, change, what):
    current = dataclasses.replace(fake_env, **change)
    problems = check_compatible(_manifest(fake_env), current)
    assert [p.what for p in errors_only(problems)] == [what]


def test_trt_build_number_and_cuda_minor_do_not_matter(fake_env):
    built = dataclasses.replace(fake_env, tensorrt_version="10.3.0.30")
    current = dataclasses.replace(fake_env, tensorrt_version="10.3.0.26", cuda_runtime_version="12.8")
    assert check_compatible(_manifest(built), current) == []


def test_other_gpu_same_architecture_is_a_warning(fake_env):
    current = dataclasses.replace(fake_env, gpu_name="Fake RTX 4080")
    problems = check_compatible(_manifest(fake_env), current)
    assert [(p.what, p.severity) for p in problems] == [("GPU model", "warning")]
    assert errors_only(problems) == []


def test_stale_onnx_is_an_error(fake_env):
    problems = check_compatible(_manifest(fake_env), fake_env, onnx_sha256="b" * 64)
    assert [p.what for p in errors_only(problems)] == ["ONNX sha256"]


def test_mismatch_message_gives_the_rebuild_command(tmp_path, fake_env):
    (tmp_path / "classifier.onnx").write_bytes(b"x")
    m = _manifest(fake_env, profile=BatchProfile(1, 4, 8), build={"dla_core": 0})
    engine = tmp_path / "classifier.fp16.engine"
    current = dataclasses.replace(fake_env, tensorrt_version="10.8.0")
    text = mismatch_message(engine, m, check_compatible(m, current))
    assert "TensorRT version" in text and "'10.3.0'" in text and "'10.8.0'" in text
    cmd = m.rebuild_command(engine)
    assert cmd in text
    assert "--rebuild" in cmd and "--precision fp16" in cmd and "--dla-core 0" in cmd
    assert "--min-batch 1 --opt-batch 4 --max-batch 8" in cmd
    assert str(tmp_path / "classifier.onnx") in cmd
    assert "--batch 2" in _manifest(fake_env, profile=BatchProfile(2, 2, 2)).rebuild_command(engine)
