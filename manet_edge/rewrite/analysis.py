"""Which tensors belong to the mask branch, and which of them are known to be >= 0.

MA's map pyramid is a function of the ``mask`` input alone. A tensor is *mask-only* when every
path into it starts at the mask input or at a constant; a node is in the *mask branch* when all
of its outputs are mask-only (and it reads the mask, directly or not). The rewrites need two
more facts about a mask-only tensor:

* it is non-negative, so ``relu(x * m) == relu(x) * m`` (ReLU is positively homogeneous); the
  mask input is in {0, 1} by contract (docs/CONTRACTS.md), pools, products and ReLUs of
  non-negative tensors stay non-negative;
* it has one channel, so it broadcasts over the feature channels (a per-pixel scalar).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

if TYPE_CHECKING:  # pragma: no cover
    from manet_edge.rewrite.base import RewriteContext

# Ops whose output is >= 0 whenever all their (non-constant) data inputs are >= 0.
_NONNEG_PRESERVING = frozenset({
    "AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "Mul", "Add", "Identity",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Concat", "Slice", "Pad", "Resize",
    "Transpose", "Cast", "CastLike", "ReduceMean", "ReduceMax", "ReduceSum", "Tile", "Min", "Max",
})
# Ops whose output is >= 0 whatever their inputs.
_ALWAYS_NONNEG = frozenset({"Relu", "Sigmoid", "Abs", "Softmax", "Exp", "Softplus"})
# Inputs that are shapes/indices/axes, not data: they do not affect the sign of the output.
_NON_DATA_INPUTS = {"Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Squeeze": (1,),
                    "Unsqueeze": (1,), "Resize": (1, 2, 3), "Tile": (1,), "ReduceMean": (1,),
                    "ReduceMax": (1,), "ReduceSum": (1,), "CastLike": (1,)}


@dataclass
class MaskInfo:
    """Result of :func:`mask_analysis` for one graph."""

    mask_input: str | None
    constant: set[str] = field(default_factory=set)
    mask_only: set[str] = field(default_factory=set)
    nonneg: set[str] = field(default_factory=set)

    def is_mask_map(self, name: str) -> bool:
        """True for a tensor derived from the mask input (and constants) only."""
        return name in self.mask_only

    def is_nonneg_mask_map(self, name: str) -> bool:
        return name in self.mask_only and name in self.nonneg

    def in_branch(self, node: onnx.NodeProto) -> bool:
        """True for a node of the mask branch (all outputs mask-only)."""
        outs = [o for o in node.output if o]
        return bool(outs) and all(o in self.mask_only for o in outs)


def _const_nonneg(tensor: onnx.TensorProto) -> bool:
    try:
        arr = numpy_helper.to_array(tensor)
    except Exception:  # unreadable (e.g. external data not loaded): be conservative
        return False
    return arr.dtype.kind in "fiu" and bool(np.all(arr >= 0))


def mask_analysis(ctx: "RewriteContext") -> MaskInfo:
    """Classify the tensors of ``ctx.graph`` (nodes must be in topological order for exact results)."""
    graph = ctx.graph
    mask = ctx.mask_input if ctx.mask_input in ctx.graph_inputs else None
    info = MaskInfo(mask_input=mask)
    constant = set(ctx.initializers)
    nonneg_const = {name for name, t in ctx.initializers.items() if _const_nonneg(t)}
    if mask is not None:
        info.mask_only.add(mask)
        info.nonneg.add(mask)
    for node in graph.node:
        data_inputs = [n for i, n in enumerate(node.input) if n]
        outs = [o for o in node.output if o]
        if node.op_type == "Constant" and not data_inputs:
            constant.update(outs)
            for a in node.attribute:
                if a.name == "value" and _const_nonneg(a.t):
                    nonneg_const.update(outs)
            continue
        if data_inputs and all(n in constant for n in data_inputs) and node.domain in ("", "ai.onnx"):
            constant.update(outs)
            continue
        if mask is None:
            continue
        if not data_inputs or not all(n in constant or n in info.mask_only for n in data_inputs):
            continue
        if not any(n in info.mask_only for n in data_inputs):
            continue
        info.mask_only.update(outs)
        skip = _NON_DATA_INPUTS.get(node.op_type, ())
        signed = [n for i, n in enumerate(node.input) if n and i not in skip]
        if node.op_type in _ALWAYS_NONNEG or (
                node.op_type in _NONNEG_PRESERVING and node.domain in ("", "ai.onnx")
                and all(n in info.nonneg or n in nonneg_const for n in signed)):
            info.nonneg.update(outs)
    info.constant = constant
    return info
