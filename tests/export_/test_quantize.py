"""fp16 cast pass and int8 QDQ with the mask branch kept in float (tiny models, synthetic X-rays)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from manet_edge.export.quantize import float_only_nodes, list_images, make_reader, quantize_int8, sensitive_nodes, to_fp16
from manet_edge.export.rules import fold_mask_attention
from manet_edge.export.rules.functions import MA_OP
from manet_edge.metadata import read_onnx_card


def _tiny_cls(tiny):
    """image -> conv -> *P(mask) -> relu -> GAP -> Gemm: a one-site MA classifier with a card."""
    from manet_edge.export.onnx import Source, make_card, set_card

    rng = np.random.default_rng(0)
    nodes = [tiny.conv("image", "c1", "conv1"), tiny.pool("mask", "m1", name="pool1"),
             helper.make_node("Mul", ["c1", "m1"], ["x1"], name="mul1"), helper.make_node("Relu", ["x1"], ["r1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r1"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    inits = tiny.conv_init("conv1", tiny.C, 1, 3, 0) + [
        onnx.numpy_helper.from_array(rng.normal(0, 1, (5, tiny.C)).astype(np.float32), "fc_w"),
        onnx.numpy_helper.from_array(np.zeros(5, np.float32), "fc_b")]
    model = tiny.make(nodes, inits, outputs=("logits",), out_shapes=[["N", 5]])
    model, _ = fold_mask_attention(model)
    set_card(model, make_card(Source("cls", None, "tiny-ma", tiny.S), precision="fp32", ma_op="fused", opset=18))
    return model


def _tiny_bottleneck_cls(tiny):
    """A ResNet-bottleneck-like block: relu(conv1x1(relu(conv3x3(s) * P(mask))) + s) -> GAP -> Gemm."""
    from manet_edge.export.onnx import Source, make_card, set_card

    rng = np.random.default_rng(0)
    nodes = [tiny.conv("image", "s0", "convs"), helper.make_node("Relu", ["s0"], ["s"], name="relus"),
             tiny.conv("s", "h0", "convh"), tiny.pool("mask", "m1", name="pool1"),
             helper.make_node("Mul", ["h0", "m1"], ["hm"], name="mulh"), helper.make_node("Relu", ["hm"], ["h"], name="reluh"),
             tiny.conv("h", "c3", "conv3", k=1, p=0), helper.make_node("Add", ["c3", "s"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"), helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    inits = tiny.conv_init("convs", tiny.C, 1, 3, 0) + tiny.conv_init("convh", 4, tiny.C, 3, 1) + \
        tiny.conv_init("conv3", tiny.C, 4, 1, 2) + [
            onnx.numpy_helper.from_array(rng.normal(0, 1, (5, tiny.C)).astype(np.float32), "fc_w"),
            onnx.numpy_helper.from_array(np.zeros(5, np.float32), "fc_b")]
    model = tiny.make(nodes, inits, outputs=("logits",), out_shapes=[["N", 5]])
    model, _ = fold_mask_attention(model)
    assert tiny.ops(model).count(MA_OP) == 1
    set_card(model, make_card(Source("cls", None, "tiny-ma", tiny.S), precision="fp32", ma_op="fused", opset=18))
    return model


def test_fp16_runs_a_bottleneck(tiny):
    model = _tiny_bottleneck_cls(tiny)
    half = to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    np.testing.assert_allclose(tiny.run(half)[0], tiny.run(model)[0], rtol=1e-2, atol=2e-2)


def test_int8_quantizes_the_convs_around_a_float_ma_multiply(tiny, tmp_path, synth):
    seg = synth.make_segmenter(tmp_path / "seg.onnx", size=tiny.S * 4)
    for i in range(4):
        synth.save_png(tmp_path / "calib" / f"x{i}.png", synth.xray(96, seed=i))
    fp32 = tmp_path / "classifier.onnx"
    onnx.save(_tiny_bottleneck_cls(tiny), str(fp32))
    q = onnx.load(str(quantize_int8(fp32, tmp_path / "classifier.int8.onnx",
                                    make_reader(tmp_path / "calib", seg, tiny.S, limit=4))))
    kinds = tiny.ops(q)
    assert kinds.count(MA_OP) == 1  # the MA multiply stays one float node
    producers = {o: n for n in q.graph.node for o in n.output}

    def dequantized(name):
        return name in producers and producers[name].op_type == "DequantizeLinear"

    def source(name):  # through a QuantizeLinear -> DequantizeLinear pair
        if dequantized(name) and producers[name].input[0] in producers \
                and producers[producers[name].input[0]].op_type == "QuantizeLinear":
            return producers[producers[name].input[0]].input[0]
        return name

    ma_out = next(n for n in q.graph.node if n.op_type == MA_OP).output[0]
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    main = next(n for n in convs if source(n.input[0]) == ma_out)
    assert dequantized(main.input[1])  # the 1x1 conv after the MA multiply has int8 weights
    ma = next(n for n in q.graph.node if n.op_type == MA_OP)
    assert not dequantized(ma.input[1])  # a float multiply by a float map
    pool = next(n for n in q.graph.node if n.op_type == "AveragePool")  # the mask branch stays float
    assert not dequantized(pool.input[0]) and not dequantized(pool.output[0])
    ref, got = tiny.run(onnx.load(str(fp32)))[0], tiny.run(q)[0]
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.95


def test_fp16_keeps_float32_io_and_matches(tiny):
    model = _tiny_cls(tiny)
    half = to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    assert all(vi.type.tensor_type.elem_type == TensorProto.FLOAT for vi in [*half.graph.input, *half.graph.output])
    assert all(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)
    assert MA_OP in tiny.ops(half)
    ref, out = tiny.run(model)[0], tiny.run(half)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2)
    from manet_edge.metadata import CARD_KEY, ModelCard

    card = ModelCard.from_json({p.key: p.value for p in half.metadata_props}[CARD_KEY])
    assert card.precision == "fp16"


def test_mask_branch_and_ma_nodes_stay_float(tiny):
    model = _tiny_cls(tiny)
    assert set(float_only_nodes(model)) == {"pool1", "mul1"}
    assert set(sensitive_nodes(model)) == {"conv1", "fc"}  # the stem conv reads the image; the head


def test_int8_calibrates_on_segmented_xrays(tiny, tmp_path, synth):
    seg = synth.make_segmenter(tmp_path / "seg.onnx", size=tiny.S * 4)
    for i in range(6):
        synth.save_png(tmp_path / "calib" / ("a" if i % 2 else "b") / f"x{i}.png", synth.xray(96, seed=i))
    images = list_images(tmp_path / "calib", limit=4)
    assert len(images) == 4 and {p.parent.name for p in images} == {"a", "b"}
    fp32 = tmp_path / "classifier.onnx"
    onnx.save(_tiny_bottleneck_cls(tiny), str(fp32))
    reader = make_reader(tmp_path / "calib", seg, tiny.S, limit=4)
    first = reader.get_next()
    assert first["image"].shape == (1, 1, tiny.S, tiny.S) and set(np.unique(first["mask"])) <= {0.0, 1.0}
    reader.rewind()
    out = quantize_int8(fp32, tmp_path / "classifier.int8.onnx", reader)
    q = onnx.load(str(out))
    kinds = tiny.ops(q)
    assert "QuantizeLinear" in kinds and "DequantizeLinear" in kinds and MA_OP in kinds
    producers = {o: n for n in q.graph.node for o in n.output}
    def dequantized(name):
        return name in producers and producers[name].op_type == "DequantizeLinear"

    for node in q.graph.node:
        if node.op_type in ("AveragePool", MA_OP):  # float inputs: no DequantizeLinear feeds the mask
            assert not dequantized(node.input[-1])
        if node.op_type == "Gemm" or "image" in node.input:
            assert not dequantized(node.input[1]), node.name  # the stem and the head keep float weights
    assert sum(dequantized(n.input[1]) for n in q.graph.node if n.op_type == "Conv") == 2  # the two inner convs
    ref, got = tiny.run(onnx.load(str(fp32)))[0], tiny.run(q)[0]
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.95
    card = read_onnx_card(str(out))
    assert card.precision == "int8" and card.extra["calibration_method"] == "MinMax"
    reader.rewind()
    pct = quantize_int8(fp32, tmp_path / "pct.int8.onnx", reader, calibrate_method="Percentile")
    assert read_onnx_card(str(pct)).extra["calibration_method"] == "Percentile"


def test_calibration_folder_errors(tmp_path):
    from manet_edge.errors import BadInputError

    with pytest.raises(BadInputError, match="does not exist"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images"):
        list_images(tmp_path / "empty")


def test_compare_precisions_scores_against_fp32(tiny, tmp_path, synth):
    """Accuracy and COVID recall from the labels, agreement and probability distance from fp32's own
    outputs: zero for fp32 itself, small for fp16, large for a model with other weights."""
    from manet_edge.export.quantize import compare_precisions

    seg = synth.make_segmenter(tmp_path / "seg.onnx", size=tiny.S * 4)
    items = []
    for i, label in enumerate(["normal", "covid", "covid", "tb", "viral", "bacterial"]):
        synth.save_png(tmp_path / "x" / f"x{i}.png", synth.xray(96, seed=i))
        items.append((tmp_path / "x" / f"x{i}.png", label))
    model = _tiny_cls(tiny)
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    onnx.save(to_fp16(model), str(tmp_path / "fp16.onnx"))
    other = copy.deepcopy(model)
    fc = next(t for t in other.graph.initializer if t.name == "fc_w")
    fc.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(fc), "fc_w"))  # reversed preferences
    onnx.save(other, str(tmp_path / "other.onnx"))
    report = compare_precisions({k: tmp_path / f"{k}.onnx" for k in ("fp32", "fp16", "other")}, seg, items)
    rows = {r.precision: r for r in report.rows}
    assert report.n == 6 and rows["fp32"].agreement == 1.0 and rows["fp32"].prob_distance == 0.0
    assert 0.0 <= rows["fp16"].prob_distance < 0.05 and rows["other"].prob_distance > 0.2
    assert rows["other"].agreement < 1.0
    for r in report.rows:  # accuracy and COVID recall are fractions of 6 and of 2 images
        assert round(r.accuracy * 6, 6) == int(round(r.accuracy * 6)) and r.covid_recall in (0.0, 0.5, 1.0)
    assert "probability distance" in report.markdown()
