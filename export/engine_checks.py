"""Pure checks around a TensorRT build: what the ONNX is, and what precision the engine really has.

* :func:`inspect_onnx` reads the facts a build plan needs from an ONNX file (fp16 or Q/DQ
  already in the graph, inputs, model card, how the MA op is expressed).
* :func:`local_function_problems` applies what TensorRT's ONNX parser source says about
  model-local functions (onnx/onnx-tensorrt ``ModelImporter.cpp`` ``parseNode`` and
  ``importLocalFunctions``; ``onnxOpImporters.cpp`` ``LocalFunctionImporter``): the parser
  dispatches on ``node.op_type()`` alone and keys local functions by ``FunctionProto.name()``
  alone, so the domain never takes part. A function named like a built-in importer (any ONNX
  op, ``TRT_*``) is shadowed by it; two functions with one name in different domains collide.
  See docs/tensorrt.md for the citations.
* :func:`check_layer_precisions` reads the engine inspector's JSON (built with
  ``ProfilingVerbosity.DETAILED``) and says whether the engine really runs in the precision that
  was asked for, so an engine silently built in FP32 fails the build.

Only numpy-free standard library at import time; ``onnx`` is imported inside :func:`inspect_onnx`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from manet_edge.runtime.engine_manifest import sha256_file

CARD_KEY = "manet_edge.card"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
FLOAT16 = 10  # onnx.TensorProto.FLOAT16

# ---------------------------------------------------------------------------------------------
# ONNX facts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxFacts:
    path: str
    sha256: str
    inputs: dict[str, list[int | str]]  # dims: int, or the dim_param / "?" for dynamic
    is_fp16: bool
    has_qdq: bool
    local_functions: tuple[tuple[str, str], ...]  # (domain, name)
    ma_op: str  # "local-function" | "plugin" | "plain-ops" | "none"
    card: dict[str, Any] | None = None
    name_problems: tuple[str, ...] = ()


def _all_nodes(model: Any) -> Iterable[Any]:
    yield from model.graph.node
    for fn in model.functions:
        yield from fn.node


def local_function_problems(model: Any) -> list[str]:
    """Ways TensorRT's parser would not expand a model-local function through its body.

    ``model`` is an ``onnx.ModelProto``. Checks: (1) a function name equal to a standard ONNX op
    (or a ``TRT_`` op) is shadowed by TensorRT's built-in importer, whatever its domain; (2) two
    functions sharing a name in different domains collide (the parser's map is keyed by name);
    (3) a call node carrying ``plugin_namespace`` is sent to the plugin registry first
    (TensorRT >= 10.15); (4) a called custom-domain op with no function and no importer falls
    back to the plugin importer and fails unless a plugin of that name is registered.
    """
    import onnx

    problems: list[str] = []
    names = Counter(fn.name for fn in model.functions)
    for fn in model.functions:
        if onnx.defs.has(fn.name) or fn.name.startswith("TRT_"):
            problems.append(
                f"local function '{fn.domain}::{fn.name}' has the name of a TensorRT built-in importer; "
                "TensorRT matches op_type only (not the domain), so it would import the built-in op "
                "instead of the function body. Rename the function.")
        if names[fn.name] > 1:
            problems.append(
                f"local function name '{fn.name}' is defined in more than one domain; TensorRT keys "
                "local functions by name only, so only one of them would be used.")
    funcs = {fn.name for fn in model.functions}
    for node in model.graph.node:
        if node.op_type in funcs and any(a.name == "plugin_namespace" for a in node.attribute):
            problems.append(
                f"node '{node.name or node.op_type}' calls local function '{node.op_type}' but carries a "
                "'plugin_namespace' attribute; TensorRT >= 10.15 then prefers a registered plugin.")
        if node.domain not in ("", "ai.onnx", "ai.onnx.ml") and node.op_type not in funcs \
                and not onnx.defs.has(node.op_type):
            problems.append(
                f"node '{node.name or node.op_type}' uses custom op '{node.domain}::{node.op_type}' with no "
                "local function body; TensorRT will look for a plugin of that name and fail without one.")
    return problems


def _detect_ma_op(model: Any, card: dict[str, Any] | None) -> str:
    funcs = {(fn.domain, fn.name) for fn in model.functions}
    custom = [(n.domain, n.op_type) for n in model.graph.node if n.domain not in ("", "ai.onnx", "ai.onnx.ml")]
    if any(c in funcs for c in custom):
        return "local-function"
    if custom:
        return "plugin"
    if card and card.get("mask_attention"):
        return "plain-ops"
    return "none"


def inspect_onnx(path: str | Path) -> OnnxFacts:
    """Read an ONNX file's structure (no external weights are loaded) into :class:`OnnxFacts`."""
    import onnx

    from manet_edge.errors import ModelError

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    init_names = {t.name for t in model.graph.initializer}
    inputs: dict[str, list[int | str]] = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        dims: list[int | str] = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
        inputs[vi.name] = dims
    io_fp16 = any(vi.type.tensor_type.elem_type == FLOAT16 for vi in [*model.graph.input, *model.graph.output])
    init_fp16 = any(t.data_type == FLOAT16 for t in model.graph.initializer)
    nodes = list(_all_nodes(model))
    cast_fp16 = any(n.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16 for a in n.attribute)
                    for n in nodes)
    const_fp16 = any(n.op_type == "Constant" and any(a.name == "value" and a.t.data_type == FLOAT16
                                                     for a in n.attribute) for n in nodes)
    props = {p.key: p.value for p in model.metadata_props}
    card = None
    if CARD_KEY in props:
        try:
            card = json.loads(props[CARD_KEY])
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: model card '{CARD_KEY}' is not valid JSON ({exc})") from exc
    return OnnxFacts(
        path=str(path),
        sha256=sha256_file(path),
        inputs=inputs,
        is_fp16=io_fp16 or init_fp16 or cast_fp16 or const_fp16,
        has_qdq=any(n.op_type in QDQ_OPS for n in nodes),
        local_functions=tuple((fn.domain, fn.name) for fn in model.functions),
        ma_op=_detect_ma_op(model, card),
        card=card,
        name_problems=tuple(local_function_problems(model)),
    )


# ---------------------------------------------------------------------------------------------
# Layer precision read-back
# ---------------------------------------------------------------------------------------------

# Order from most reduced to full precision; a layer's precision is its most reduced tensor.
_RANK = {"int4": 0, "fp4": 0, "int8": 1, "fp8": 1, "fp16": 2, "bf16": 2, "fp32": 3}
_SKIP_LAYER_TYPES = frozenset({
    "reformat", "noop", "constant", "shuffle", "identity", "cast", "shape", "assertion", "slice",
    "concatenation", "gather", "shapehosttodevice", "fill", "quantize", "dequantize",
})
_HEAVY_HINTS = ("conv", "gemm", "matrixmultiply", "matmul", "fullyconnected", "deconv")
_TENSOR_KEYS = ("Format/Datatype", "Format/DataType", "DataType", "Datatype", "Type", "Format")


def tensor_precision(desc: Any) -> str | None:
    """Precision named by one inspector tensor description (dict or text); None if unknown/integer."""
    if isinstance(desc, dict):
        text = " ".join(str(desc[k]) for k in _TENSOR_KEYS if k in desc)
    else:
        text = str(desc)
    t = text.lower()
    if not t or "n/a" in t:
        return None
    if "uint8" in t or "int32" in t or "int64" in t or "bool" in t:
        return None
    for needle, name in (("int4", "int4"), ("fp4", "fp4"), ("e2m1", "fp4"), ("int8", "int8"), ("fp8", "fp8"),
                         ("e4m3", "fp8"), ("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"),
                         ("half", "fp16"), ("fp32", "fp32"), ("float", "fp32")):
        if needle in t:
            return name
    return None


def layer_precision(layer: dict[str, Any]) -> str | None:
    found = [tensor_precision(t) for t in [*layer.get("Inputs", []), *layer.get("Outputs", [])]]
    weights = layer.get("Weights")
    if isinstance(weights, dict):
        found.append(tensor_precision({"Type": weights.get("Type", "")}))
    found = [p for p in found if p is not None]
    if not found:
        return None
    return min(found, key=lambda p: _RANK[p])


def _is_compute(layer: dict[str, Any]) -> bool:
    kind = str(layer.get("LayerType", "")).lower()
    name = str(layer.get("Name", ""))
    return kind not in _SKIP_LAYER_TYPES and not name.startswith("Reformatting CopyNode")


def _is_heavy(layer: dict[str, Any]) -> bool:
    kind = str(layer.get("LayerType", "")).lower() + " " + str(layer.get("ParameterType", "")).lower()
    return any(h in kind for h in _HEAVY_HINTS)


@dataclass(frozen=True)
class PrecisionReport:
    requested: str
    ok: bool
    counts: dict[str, int]  # precision -> number of compute layers
    judged_on: str  # "conv/gemm layers" or "all compute layers"
    fraction: float  # share of judged layers in the requested precision
    problems: tuple[str, ...] = ()
    off_precision: tuple[str, ...] = field(default=())  # judged layers not in the requested precision

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())) or "none"
        head = "OK" if self.ok else "FAILED"
        text = (f"precision check {head}: requested {self.requested}; {self.fraction:.0%} of "
                f"{self.judged_on} run in it; layers by precision: {counts}")
        return text + "".join(f"\n  - {p}" for p in self.problems)


def _layers_from(info: Any) -> list[Any]:
    if isinstance(info, (str, bytes)):
        try:
            info = json.loads(info)
        except json.JSONDecodeError as exc:
            raise ValueError(f"engine inspector output is not JSON ({exc})") from exc
    if isinstance(info, dict):
        info = info.get("Layers", [])
    if not isinstance(info, list):
        raise ValueError("engine inspector output: expected a list of layers or an object with 'Layers'")
    return info


def plugin_layers(info: Any) -> list[str]:
    """Names of engine layers that run a plugin (LayerType ``PluginV2``/``PluginV3``...)."""
    return [str(layer.get("Name", "?")) for layer in _layers_from(info)
            if isinstance(layer, dict) and "plugin" in str(layer.get("LayerType", "")).lower()]


def check_layer_precisions(info: Any, requested: str, *, min_fraction: float = 0.5) -> PrecisionReport:
    """Does the engine described by ``info`` run in ``requested`` (fp32|fp16|int8)?

    ``info`` is the inspector's JSON (string or parsed) or a list of layer dicts. fp32 passes only
    if no compute layer runs in reduced precision. fp16/int8 pass if at least ``min_fraction`` of
    the convolution/GEMM layers (all compute layers if there are none) run in that precision.
    """
    if requested not in ("fp32", "fp16", "int8"):
        raise ValueError(f"requested precision must be fp32, fp16 or int8, got {requested!r}")
    layers = _layers_from(info)
    if any(not isinstance(layer, dict) for layer in layers):
        return PrecisionReport(requested, False, {}, "no layers", 0.0, (
            "the engine holds layer names only: build it with ProfilingVerbosity.DETAILED to read precisions",))
    compute = [layer for layer in layers if _is_compute(layer)]
    precs = {id(layer): layer_precision(layer) for layer in compute}
    known = [layer for layer in compute if precs[id(layer)] is not None]
    counts = dict(Counter(precs[id(layer)] for layer in known))
    if not known:
        return PrecisionReport(requested, False, counts, "no layers", 0.0, (
            "no layer reports a data type (inspect with an execution context whose input shapes are set)",))
    heavy = [layer for layer in known if _is_heavy(layer)]
    judged, judged_on = (heavy, "conv/gemm layers") if heavy else (known, "all compute layers")
    off = tuple(str(layer.get("Name", "?")) for layer in judged if precs[id(layer)] != requested)
    fraction = 1 - len(off) / len(judged)
    problems: list[str] = []
    if requested == "fp32":
        reduced = [str(layer.get("Name", "?")) for layer in known if _RANK[precs[id(layer)]] < _RANK["fp32"]]
        if reduced:
            problems.append(f"{len(reduced)} layer(s) run in reduced precision although fp32 was requested: "
                            + ", ".join(reduced[:5]))
    elif fraction < min_fraction:
        problems.append(
            f"only {fraction:.0%} of {judged_on} run in {requested} (need {min_fraction:.0%}); TensorRT chose "
            "other kernels. The engine is not the precision you asked for.")
    return PrecisionReport(requested, not problems, counts, judged_on, fraction, tuple(problems), off)
