"""Model cards are checked in one place (``ModelCard``): types, ranges, known values; a classifier
whose file leaves the class count open is probed against its card before any file runs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from manet_edge.errors import ModelError
from manet_edge.metadata import CARD_KEY, ModelCard


def _set_card(path, **changes) -> None:
    """Rewrite the card JSON of an ONNX file, bypassing ModelCard's checks (what a hand edit does)."""
    model = onnx.load(str(path))
    card = json.loads({p.key: p.value for p in model.metadata_props}[CARD_KEY])
    card.update(changes)
    helper.set_model_props(model, {CARD_KEY: json.dumps(card)})
    onnx.save(model, str(path))


@pytest.mark.parametrize("changes,phrase", [
    ({"postprocess": "junk"}, "'postprocess' must be an object"),
    ({"postprocess": {"threshold": "0.5"}}, "postprocess.threshold must be a number"),
    ({"postprocess": {"keep_largest": 1.5}}, "postprocess.keep_largest must be an integer"),
    ({"postprocess": {"min_lung_fraction": 0.9, "max_lung_fraction": 0.2}}, "above max_lung_fraction"),
    ({"postprocess": {"threshold": 1.5}}, "postprocess.threshold must be a number in (0.0, 1.0)"),
    ({"postprocess": {"thresold": 0.5}}, "unknown keys ['thresold']"),
    ({"mask_threshold": "high"}, "mask_threshold must be a number"),
    ({"input_size": "224"}, "input_size must be an integer"),
    ({"input_size": True}, "input_size must be an integer"),
    ({"in_channels": 0}, "in_channels must be an integer in [1, 4]"),
    ({"classes": ["normal"]}, "classes must be a list"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"temperature": "1"}, "temperature must be a positive number"),
])
def test_bad_cards_are_one_model_error(changes, phrase):
    data = {"kind": "seg", "model_name": "m", "input_size": 64, **changes}
    with pytest.raises(ModelError) as info:
        ModelCard.from_json(json.dumps(data), source="seg.onnx")
    assert phrase in str(info.value) and str(info.value).startswith("seg.onnx: model card:")


def test_a_good_card_round_trips():
    card = ModelCard(kind="seg", model_name="m", input_size=64, postprocess={"threshold": 0.4, "keep_largest": 2})
    assert ModelCard.from_json(card.to_json()) == card
    assert card.postprocess_config().threshold == 0.4


@pytest.fixture
def app():
    import typer

    from manet_edge.commands import infer as infer_cmd

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    infer_cmd.register(app)
    return app


def _infer(app, folder, models, out):
    return CliRunner().invoke(app, ["infer", str(folder), "--out", str(out), "--models", str(models), "--no-progress"])


@pytest.mark.parametrize("changes,phrase", [
    ({"postprocess": "junk"}, "'postprocess' must be an object"),
    ({"postprocess": {"threshold": "0.5"}}, "postprocess.threshold must be a number"),
])
def test_infer_refuses_a_bad_segmenter_card_in_one_line(app, image_folder, tmp_path, synth, changes, phrase):
    models = synth.make_models_dir(tmp_path / "m")
    _set_card(models / "segmenter.onnx", **changes)
    res = _infer(app, image_folder, models, tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert phrase in res.stderr and "segmenter.onnx" in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "o" / "predictions.csv").exists()


def _three_logit_classifier(path, size):
    """A classifier whose class dimension is data-dependent (so no file check can see it) and is 3
    for any mask with lung in it; its card says 5 classes."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (5, 1)).astype(np.float32), "gw"),
             numpy_helper.from_array(np.zeros(5, np.float32), "gb"),
             numpy_helper.from_array(np.array([3.0], np.float32), "three"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([1], np.int64), "one_d")]
    nodes = [helper.make_node("Mul", ["image", "mask"], ["masked"]),
             helper.make_node("GlobalAveragePool", ["masked"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["feats"], axis=1),
             helper.make_node("Gemm", ["feats", "gw", "gb"], ["logits5"], transB=1),
             helper.make_node("ReduceMax", ["mask"], ["peak"], keepdims=0),
             helper.make_node("Reshape", ["peak", "one_d"], ["peak1"]),
             helper.make_node("Mul", ["peak1", "three"], ["ends_f"]),
             helper.make_node("Cast", ["ends_f"], ["ends"], to=TensorProto.INT64),
             helper.make_node("Slice", ["logits5", "zero", "ends", "axis1"], ["logits"])]
    graph = helper.make_graph(
        nodes, "three", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size]),
                         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "K"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    card = ModelCard(kind="cls", model_name="three", input_size=size)
    helper.set_model_props(model, {CARD_KEY: card.to_json()})
    onnx.save(model, str(path))


def test_a_classifier_with_the_wrong_class_count_is_refused_before_the_folder(app, image_folder, tmp_path, synth,
                                                                               monkeypatch):
    models = synth.make_models_dir(tmp_path / "m")
    _three_logit_classifier(models / "classifier.onnx", synth.SIZE)
    from manet_edge.pipeline import Pipeline

    ran = []
    original = Pipeline.run
    monkeypatch.setattr(Pipeline, "run", lambda self, *a, **k: ran.append(1) or original(self, *a, **k))
    res = _infer(app, image_folder, models, tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert "shape (1, 3)" in res.stderr and "5 classes" in res.stderr and "Traceback" not in res.output
    assert ran == [] and not (tmp_path / "o" / "predictions.csv").exists()
