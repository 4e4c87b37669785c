"""manet_edge.assets: bundled model/sample locations and the message when models are missing."""

from __future__ import annotations

import pytest

from manet_edge.assets import default_models_dir, model_paths, samples_dir
from manet_edge.errors import ModelError
from manet_edge.pipeline import Pipeline, PipelineConfig, walk_folder
from manet_edge.runtime import create_runner


def test_locations_are_inside_the_package():
    assert default_models_dir().parent.name == "assets" and samples_dir().parent == default_models_dir().parent


def test_missing_models_name_the_fix(tmp_path):
    with pytest.raises(ModelError, match=r"lacks the model files .*segmenter.onnx.*manet-edge export"):
        model_paths(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        model_paths(tmp_path / "nope")
    with pytest.raises(ModelError, match="manet-edge engine"):
        model_paths(tmp_path, ".engine")
    (tmp_path / "segmenter.onnx").write_bytes(b"x")
    (tmp_path / "classifier.onnx").write_bytes(b"x")
    assert model_paths(tmp_path) == (tmp_path / "segmenter.onnx", tmp_path / "classifier.onnx")


def test_bundled_models_when_present():
    try:
        seg, cls = model_paths(None)
    except ModelError as exc:
        assert "bundled default models are missing" in str(exc) and "manet-edge export" in str(exc)
        pytest.skip("default models not bundled yet")
    with Pipeline(create_runner(seg), create_runner(cls)) as pipe:
        assert pipe.seg.card.kind == "seg" and pipe.cls.card.kind == "cls"


def test_bundled_samples_decode_and_run(seg_model, cls_model):
    files = walk_folder(samples_dir())
    images = [f for f in files if f.rel.endswith(".png")]
    if not images:
        pytest.skip("no bundled samples")
    with Pipeline(create_runner(seg_model, threads=1), create_runner(cls_model, threads=1),
                  PipelineConfig(batch=4)) as pipe:
        results = pipe.run(images)
    assert all(r.ok for r in results), [(r.file, r.error) for r in results if not r.ok]
