"""Layer precision read-back from engine-inspector JSON (fake layer lists, TensorRT 10 and 11 keys)."""

from __future__ import annotations

import json

import pytest

from manet_edge.export.engine_checks import check_layer_precisions, layer_precision, tensor_precision


def _layer(name, kind, fmt, weights=None, key="Format/Datatype"):
    layer = {"Name": name, "LayerType": kind,
             "Inputs": [{"Name": f"{name}_in", key: fmt}], "Outputs": [{"Name": f"{name}_out", key: fmt}]}
    if weights:
        layer["Weights"] = {"Type": weights, "Count": 10}
    return layer


def _engine(conv_fmt, n_conv=4, extra=()):
    layers = [_layer("Reformatting CopyNode for Input Tensor 0 to conv0", "Reformat", "Row major linear FP32 format")]
    layers += [_layer(f"conv{i}", "CaskConvolution", conv_fmt) for i in range(n_conv)]
    layers += list(extra)
    return {"Layers": layers, "Bindings": ["image", "mask", "logits"]}


@pytest.mark.parametrize("text, expected", [
    ("Row major linear FP32 format", "fp32"),
    ("Float", "fp32"),
    ("Row major linear FP16 format", "fp16"),
    ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Half", "fp16"),
    ("Thirty-two wide channel vectorized row major Int8 format.", "int8"),
    ("BFloat16", "bf16"),
    ("N/A due to dynamic shapes", None),
    ("Int32", None),
    ("UInt8", None),
])
def test_tensor_precision(text, expected):
    assert tensor_precision({"Format/Datatype": text}) == expected


def test_trt11_split_keys_are_read():
    assert tensor_precision({"Format": "Row major linear", "DataType": "Half"}) == "fp16"


def test_layer_precision_is_the_most_reduced_tensor():
    layer = {"Name": "c", "LayerType": "CaskConvolution",
             "Inputs": [{"Format/Datatype": "Int8"}], "Outputs": [{"Format/Datatype": "Float"}]}
    assert layer_precision(layer) == "int8"
    assert layer_precision(_layer("c", "CaskConvolution", "Float", weights="Half")) == "fp16"


def test_fp16_pass_and_silent_fp32_fail():
    ok = check_layer_precisions(json.dumps(_engine("Row major linear FP16 format")), "fp16")
    assert ok.ok and ok.counts == {"fp16": 4} and ok.fraction == 1.0 and ok.judged_on == "conv/gemm layers"
    bad = check_layer_precisions(_engine("Row major linear FP32 format"), "fp16")
    assert not bad.ok and bad.fraction == 0.0
    assert "not the precision you asked for" in bad.summary()
    assert bad.off_precision == ("conv0", "conv1", "conv2", "conv3")


def test_int8_pass_and_fail():
    mixed = _engine("Thirty-two wide channel vectorized row major Int8 format.", n_conv=3,
                    extra=[_layer("first_conv", "CaskConvolution", "Half")])
    ok = check_layer_precisions(mixed, "int8")
    assert ok.ok and ok.fraction == 0.75 and ok.off_precision == ("first_conv",)
    bad = check_layer_precisions(_engine("Channel major FP16 format where channel % 8 == 0"), "int8")
    assert not bad.ok and bad.counts == {"fp16": 4}


def test_threshold_is_configurable():
    mixed = _engine("Int8", n_conv=1, extra=[_layer(f"h{i}", "CaskConvolution", "Half") for i in range(3)])
    assert not check_layer_precisions(mixed, "int8").ok
    assert check_layer_precisions(mixed, "int8", min_fraction=0.25).ok


def test_fp32_fails_when_any_layer_is_reduced():
    assert check_layer_precisions(_engine("Float"), "fp32").ok
    bad = check_layer_precisions(_engine("Float", extra=[_layer("pool", "CaskPooling", "Half")]), "fp32")
    assert not bad.ok and "reduced precision" in bad.problems[0]


def test_without_conv_layers_all_compute_layers_are_judged():
    info = [_layer("pw", "PointWiseV2", "Half"), _layer("sh", "Shuffle", "Float")]
    rep = check_layer_precisions(info, "fp16")
    assert rep.ok and rep.judged_on == "all compute layers" and rep.counts == {"fp16": 1}


def test_names_only_or_no_types_cannot_be_verified():
    rep = check_layer_precisions({"Layers": ["conv0 + relu", "fc"]}, "fp16")
    assert not rep.ok and "DETAILED" in rep.problems[0]
    rep = check_layer_precisions(_engine("N/A due to dynamic shapes"), "fp16")
    assert not rep.ok and "execution context" in rep.problems[0]


def test_bad_input():
    with pytest.raises(ValueError, match="not JSON"):
        check_layer_precisions("{oops", "fp16")
    with pytest.raises(ValueError, match="fp32, fp16 or int8"):
        check_layer_precisions([], "fp8")


def test_plugin_layers_are_found():
    from manet_edge.export.engine_checks import plugin_layers

    info = _engine("Half", extra=[{"Name": "ma0", "LayerType": "PluginV3", "Inputs": [], "Outputs": []}])
    assert plugin_layers(info) == ["ma0"]
    assert plugin_layers(_engine("Half")) == []
