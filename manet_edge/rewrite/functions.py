"""The fused MA op ``manet_edge::MaskAttentionMul`` and its ONNX model-local function body.

One node per MA site::

    Y = manet_edge.MaskAttentionMul(X, M; channels=C, map_channels=K)   # Y = X * M, M (N,1,h,w)

``X`` is the feature map (N, C, h, w), ``M`` the site's map from the hoisted mask pyramid (the
"pool" half of the multiply-pool step, shared between sites), ``channels`` the static C. The op
is defined by a ``FunctionProto`` stored in ``model.functions``, so ONNX Runtime and TensorRT
(>= 9, which inlines local functions) run it with no plugin; OpenVINO 2026.4 cannot convert the
body and gets a frontend conversion instead (a broadcast ``Multiply``, registered by
:mod:`manet_edge.runtime.openvino`, which keeps its own copy of :data:`MA_DOMAIN`/:data:`MA_OP`);
``--ma-op inline`` writes the same graph with the body inlined (:func:`inline_ma`).

Two bodies compute the same values (a per-pixel scalar times every channel):

``expand`` (the exporter's bodies ``auto`` and ``expand``)
    ``Y = Mul(X, Conv(M, ones(map_channels,1,1,1)))``. With ``map_channels = C`` the 1x1 conv
    broadcasts the map to the C channels in the layout the runtime picks for convolutions, so
    ONNX Runtime's NCHWc pass keeps the multiply in its blocked layout instead of reordering the
    feature map to NCHW and back around a broadcast ``Mul``. With ``map_channels = 1`` the conv
    passes the one-channel map through and the multiply broadcasts it (ONNX Runtime then reorders
    the feature map around the multiply; where that is the faster form is a measurement, see
    :mod:`~manet_edge.rewrite.fuse_mask_mul`). The weights are built from
    the ``map_channels`` attribute by constant-foldable ops, so the function has no tensor inputs
    besides X and M.
``broadcast``
    ``Y = Mul(X, M)``, the literal definition.

Every node carries ``channels`` (C, the feature map's channel count) and ``map_channels`` (1 or
C, the width the ``expand`` body broadcasts the map to; the ``broadcast`` body ignores it).

The names were checked against every ONNX operator schema (all versions) and the TensorRT ONNX
parser's built-in importers (TensorRT matches local functions and importers by name alone); the
custom domain keeps it apart from both.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto, TensorProto, helper

from manet_edge.errors import ManetEdgeError

MA_DOMAIN = "manet_edge"
MA_OP = "MaskAttentionMul"
MA_SITE_OPS = (MA_OP,)
MA_DOMAIN_VERSION = 1
BODIES = ("expand", "broadcast")


def _ref_attr(name: str, ref: str, attr_type: int) -> AttributeProto:
    a = AttributeProto()
    a.name = name
    a.ref_attr_name = ref
    a.type = attr_type
    return a


def build_function(opset: int, body: str = "expand") -> onnx.FunctionProto:
    """The ``FunctionProto`` of :data:`MA_OP` for models importing the default domain at ``opset``."""
    if body not in BODIES:
        raise ManetEdgeError(f"MA function body must be one of {BODIES}, got {body!r}")
    if body == "broadcast":
        nodes = [helper.make_node("Mul", ["X", "M"], ["Y"])]
    else:
        channels = helper.make_node("Constant", [], ["c"])
        channels.attribute.append(_ref_attr("value_int", "map_channels", AttributeProto.INT))
        nodes = [
            channels,
            helper.make_node("Constant", [], ["axes0"], value_ints=[0]),
            helper.make_node("Unsqueeze", ["c", "axes0"], ["c1"]),
            helper.make_node("Constant", [], ["hw"], value_ints=[1, 1, 1]),
            helper.make_node("Concat", ["c1", "hw"], ["wshape"], axis=0),
            helper.make_node("ConstantOfShape", ["wshape"], ["ones"],
                             value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
            helper.make_node("CastLike", ["ones", "X"], ["w"]),
            helper.make_node("Conv", ["M", "w"], ["E"], kernel_shape=[1, 1]),
            helper.make_node("Mul", ["X", "E"], ["Y"]),
        ]
    return helper.make_function(
        MA_DOMAIN, MA_OP, inputs=["X", "M"], outputs=["Y"], nodes=nodes,
        opset_imports=[helper.make_opsetid("", opset)], attributes=["channels", "map_channels"],
        doc_string=f"Mask attention multiply: Y = X * M, M (N,1,h,w) broadcast over the C=channels "
                   f"channels of X (N,C,h,w). Body: {body} (map_channels: 1 or C, the width the expand "
                   f"body broadcasts M to before the multiply).")


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ManetEdgeError("model imports no default ONNX opset")


def ensure_function(model: onnx.ModelProto, body: str = "expand") -> None:
    """Add the MA function (and its domain import) to ``model`` unless it is there already."""
    if not any(f.domain == MA_DOMAIN and f.name == MA_OP for f in model.functions):
        model.functions.append(build_function(model_opset(model), body))
    if not any(imp.domain == MA_DOMAIN for imp in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MA_DOMAIN, MA_DOMAIN_VERSION))


def make_ma_node(x: str, m: str, y: str, channels: int, name: str, map_channels: int | None = None) -> onnx.NodeProto:
    """One MA site; ``map_channels`` defaults to ``channels`` (the map expanded to every channel)."""
    k = int(channels) if map_channels is None else int(map_channels)
    if k not in (1, int(channels)):
        raise ManetEdgeError(f"map_channels must be 1 or channels={channels}, got {k}")
    return helper.make_node(MA_OP, [x, m], [y], name=name, domain=MA_DOMAIN, channels=int(channels), map_channels=k)


def count_ma_nodes(model: onnx.ModelProto) -> int:
    """MA sites in the main graph: nodes of the fused op."""
    return sum(1 for n in model.graph.node if n.domain == MA_DOMAIN and n.op_type in MA_SITE_OPS)


def drop_unused_functions(model: onnx.ModelProto) -> None:
    """Remove MA functions no node calls any more (and the domain import when none is left)."""
    while True:
        called = {(n.domain, n.op_type) for n in model.graph.node}
        called |= {(n.domain, n.op_type) for f in model.functions for n in f.node}
        keep = [f for f in model.functions if f.domain != MA_DOMAIN or (f.domain, f.name) in called]
        if len(keep) == len(model.functions):
            break
        del model.functions[:]
        model.functions.extend(keep)
    if any(f.domain == MA_DOMAIN for f in model.functions) or any(n.domain == MA_DOMAIN for n in model.graph.node):
        return
    imports = [i for i in model.opset_import if i.domain != MA_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(imports)


def inline_ma(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every local function inlined (``--ma-op inline``).

    The inlined weight chains of the ``expand`` body are folded into initializers: runtimes fold
    them when they inline the function themselves, but ONNX Runtime leaves an inlined ``Cast``
    unfolded, and the 1x1 conv then misses the NCHWc layout it exists for.
    """
    from onnx import inliner

    out = inliner.inline_local_functions(model)
    drop_unused_functions(out)
    fold_constants(out)
    return out


_FOLDABLE = frozenset({"Constant", "Unsqueeze", "Concat", "ConstantOfShape", "Cast", "CastLike", "Reshape"})


def fold_constants(model: onnx.ModelProto) -> int:
    """Evaluate nodes of :data:`_FOLDABLE` types whose data inputs are constants; returns how many."""
    import numpy as np
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    elem_types: dict[str, int] = {vi.name: vi.type.tensor_type.elem_type for vi in graph.input}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            elem_types[vi.name] = vi.type.tensor_type.elem_type
    except Exception:  # types are only needed for CastLike; without them it stays unfolded
        pass
    keep, folded = [], 0
    for node in graph.node:
        if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx"):
            keep.append(node)
            continue
        if node.op_type == "CastLike":
            to = elem_types.get(node.input[1], 0)
            if node.input[0] not in values or not to:
                keep.append(node)
                continue
            evaluated = helper.make_node("Cast", [node.input[0]], [node.output[0]], to=to)
        elif all(i in values for i in node.input if i):
            evaluated = node
        else:
            keep.append(node)
            continue
        feeds = {i: values[i] for i in evaluated.input if i}
        (result,) = ReferenceEvaluator(evaluated).run(None, feeds)
        values[node.output[0]] = np.asarray(result)
        graph.initializer.append(numpy_helper.from_array(np.asarray(result), node.output[0]))
        folded += 1
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return folded
