"""OpenVINO rule: one-channel mask pools computed as a row pool and a column pool.

OpenVINO's CPU plugin is slow on a large ``AveragePool`` over a one-channel map (the MA mask
pyramid at high resolution); the same mean as a (1, kw) pool, a transpose and a (kh, 1) pool runs
much faster there. ONNX Runtime does not need it, so this rule is in the OpenVINO rule set
(:data:`manet_edge.rewrite.RULE_SETS`) and runs when the OpenVINO runner reads a model
(:func:`manet_edge.runtime.openvino.read_onnx`), not at export.

:func:`refusals` says, for every pool, why it is left alone (``None``: it qualifies).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

POOL_AS_CHANNELS_MIN = 128 * 128


def _attr(node: Any, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _attribute_refusal(node: Any) -> str | None:
    if node.op_type != "AveragePool" or node.domain not in ("", "ai.onnx"):
        return f"not an AveragePool ({node.op_type})"
    if _attr(node, "count_include_pad", 0) != 1:
        return "the padding is not counted (count_include_pad=0): the row/column means would differ"
    if _attr(node, "ceil_mode", 0):
        return "ceil_mode is set"
    if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return "auto_pad is set (explicit pads are needed)"
    if not all(d == 1 for d in _attr(node, "dilations", [1, 1])):
        return "the pool is dilated"
    return None


def _shape_refusal(shape: list[int], kernel: list[int], min_pixels: int) -> str | None:
    if len(shape) != 4 or shape[1] != 1:
        return f"the input is not a one-channel map (shape {shape or 'unknown'})"
    if len(kernel) != 2:
        return f"not a 2-D pool (kernel {kernel})"
    if min(shape[2:]) <= 0:
        return "the map's height and width are not static"
    if shape[2] * shape[3] < min_pixels:
        return f"the map is {shape[2]}x{shape[3]}, under {min_pixels} pixels (not worth it)"
    return None


def _dims(model: Any) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    return {vi.name: [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
            for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}


def refusals(model: Any, min_pixels: int | None = None) -> dict[str, str | None]:
    """Every ``AveragePool`` node's name -> why :func:`pool_maps_as_channels` leaves it alone
    (``None``: it would rewrite it). The model is not changed."""
    min_pixels = POOL_AS_CHANNELS_MIN if min_pixels is None else min_pixels
    dims = _dims(model)
    out: dict[str, str | None] = {}
    for node in model.graph.node:
        if node.op_type != "AveragePool":
            continue
        out[node.name or node.output[0]] = _attribute_refusal(node) or _shape_refusal(
            dims.get(node.input[0], []), list(_attr(node, "kernel_shape", [])), min_pixels)
    return out


def pool_maps_as_channels(model: Any, min_pixels: int | None = None) -> int:
    """Rewrite qualifying one-channel ``AveragePool`` nodes of an ONNX ``model`` in place; returns how many.

    A node qualifies when its input is (N, 1, H, W) with static H*W >= ``min_pixels``, it counts
    the padding (``count_include_pad=1``; every MA pyramid pool does), has explicit pads, no
    ``ceil_mode``/``auto_pad``/dilations. Then ``P(x; kh x kw, sh x sw, pads)`` becomes
    Reshape (N,H,1,W) -> AveragePool (1,kw) -> Transpose (N,W',H,1) -> AveragePool (kh,1) ->
    Transpose (N,1,H',W'): with the padding counted, the kh x kw mean is the mean over kh of the
    means over kw. ``min_pixels`` defaults to :data:`POOL_AS_CHANNELS_MIN`.
    """
    min_pixels = POOL_AS_CHANNELS_MIN if min_pixels is None else min_pixels
    graph = model.graph
    candidates = [n for n in graph.node if _attribute_refusal(n) is None]
    if not candidates:
        return 0
    dims = _dims(model)
    replaced: dict[int, list[Any]] = {}
    taken = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    for node in candidates:
        shape = dims.get(node.input[0], [])
        kernel = list(_attr(node, "kernel_shape", []))
        if _shape_refusal(shape, kernel, min_pixels) is not None:
            continue
        h, w = shape[2], shape[3]
        (kh, kw), (sh, sw) = kernel, list(_attr(node, "strides", [1, 1]))
        top, left, bottom, right = list(_attr(node, "pads", [0, 0, 0, 0]))
        base = f"{node.output[0]}__ov_pool"
        while any(t.startswith(base) for t in taken):
            base += "_"
        taken.add(base)
        graph.initializer.append(numpy_helper.from_array(np.array([0, h, 1, w], np.int64), f"{base}_shape"))
        nodes = [helper.make_node("Reshape", [node.input[0], f"{base}_shape"], [f"{base}_rows"])]
        nodes.append(helper.make_node("AveragePool", [f"{base}_rows"], [f"{base}_w"], kernel_shape=[1, kw],
                                      strides=[1, sw], pads=[0, left, 0, right], count_include_pad=1))
        nodes.append(helper.make_node("Transpose", [f"{base}_w"], [f"{base}_cols"], perm=[0, 3, 1, 2]))
        nodes.append(helper.make_node("AveragePool", [f"{base}_cols"], [f"{base}_h"], kernel_shape=[kh, 1],
                                      strides=[sh, 1], pads=[top, 0, bottom, 0], count_include_pad=1))
        nodes.append(helper.make_node("Transpose", [f"{base}_h"], [node.output[0]], perm=[0, 3, 2, 1]))
        replaced[id(node)] = nodes
    if replaced:
        new = [m for n in graph.node for m in replaced.get(id(n), [n])]
        del graph.node[:]
        graph.node.extend(new)
    return len(replaced)
