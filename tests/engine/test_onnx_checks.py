"""What the build reads from an ONNX file, and the local-function rules from TensorRT's parser."""

from __future__ import annotations

import onnx
from onnx import helper

from manet_edge.export.engine_checks import inspect_onnx, local_function_problems


def test_fp32_onnx_facts(tiny_onnx):
    facts = inspect_onnx(tiny_onnx)
    assert facts.inputs == {"image": ["N", 1, 8, 8], "mask": ["N", 1, 8, 8]}
    assert not facts.is_fp16 and not facts.has_qdq
    assert facts.ma_op == "plain-ops" and facts.card["model_name"] == "tiny-ma"
    assert len(facts.sha256) == 64 and facts.name_problems == ()


def test_fp16_and_qdq_are_detected(onnx_factory):
    assert inspect_onnx(onnx_factory("c.fp16.onnx", fp16=True)).is_fp16
    facts = inspect_onnx(onnx_factory("c.int8.onnx", qdq=True))
    assert facts.has_qdq and not facts.is_fp16


def test_local_function_is_recorded(onnx_factory):
    facts = inspect_onnx(onnx_factory(local_function="MaskAttention"))
    assert facts.ma_op == "local-function"
    assert facts.local_functions == (("manet_edge", "MaskAttention"),)
    assert facts.name_problems == ()


def test_no_mask_attention(onnx_factory):
    facts = inspect_onnx(onnx_factory(card={"kind": "cls", "model_name": "plain", "input_size": 8}))
    assert facts.ma_op == "none"


def test_function_named_like_an_onnx_op_is_flagged(onnx_factory):
    # TensorRT dispatches on op_type only: a custom-domain "Mul" would hit the built-in Mul importer.
    model = onnx.load(str(onnx_factory(local_function="Mul")))
    problems = local_function_problems(model)
    assert len(problems) == 1 and "matches op_type only" in problems[0]


def test_same_function_name_in_two_domains_is_flagged(onnx_factory):
    model = onnx.load(str(onnx_factory(local_function="MaskAttention")))
    twin = helper.make_function("other_domain", "MaskAttention", ["x", "m"], ["y"],
                                [helper.make_node("Add", ["x", "m"], ["y"])], [helper.make_opsetid("", 17)])
    model.functions.append(twin)
    problems = local_function_problems(model)
    assert any("keys local functions by name only" in p for p in problems)


def test_custom_op_without_body_or_with_plugin_namespace(onnx_factory):
    model = onnx.load(str(onnx_factory(local_function="MaskAttention")))
    del model.functions[:]
    assert any("look for a plugin" in p for p in local_function_problems(model))
    model = onnx.load(str(onnx_factory(local_function="MaskAttention")))
    node = next(n for n in model.graph.node if n.op_type == "MaskAttention")
    node.attribute.append(helper.make_attribute("plugin_namespace", ""))
    assert any("plugin_namespace" in p for p in local_function_problems(model))
