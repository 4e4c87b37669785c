"""Graph rewrites, one rule per file (pattern, check, rewrite), torch-free: the exporter and the
runtime both import this package. A rule's check returns ``None`` to accept a match or a string
that says why it refused (``RewriteReport.why_not(rule)``).

Rule sets per target (:data:`RULE_SETS`): ``ma`` (every MA classifier, at export, below),
``openvino`` (:mod:`~manet_edge.rewrite.openvino_pools`, applied when the OpenVINO runner
reads a model) and ``common`` (every model; none yet).

The MA pipeline (:func:`fold_mask_attention`), in order:

1. ``cse_mask_branch`` - identical mask pools (same map, same k/s/p) are computed once.
2. ``factor_mask_mul`` - ``a * m + b * m -> (a + b) * m`` (ResNet blocks with a projection
   shortcut), so the add fuses into the conv and one multiply is left.
3. ``relu_before_mask_mul`` - ``Relu(x * m) -> Relu(x) * m`` (m >= 0), so the runtime fuses
   ``Conv [+ Add] + Relu`` as in the plain network.
4. ``fuse_mask_mul`` - every other MA site becomes one ``manet_edge::MaskAttentionMul`` node,
   defined by a model-local function (:mod:`~manet_edge.rewrite.functions`); the body
   (:data:`MA_BODIES`, default ``auto``) sets how each site broadcasts its map.
5. ``separable_mask_pool`` - a large square mask pool (the ResNet stem's 7x7) becomes a column
   pool and a row pool.
6. ``hoist_mask_branch`` - the mask pyramid is computed first, from the ``mask`` input alone.

``ma_op="inline"`` then inlines the function, giving the same graph in standard ops only.
"""

from __future__ import annotations

import onnx

from manet_edge.choices import MA_OPS
from manet_edge.errors import ManetEdgeError
from manet_edge.rewrite import (
    cse_mask_branch,
    factor_mask_mul,
    fuse_mask_mul,
    hoist_mask_branch,
    relu_before_mask_mul,
    separable_mask_pool,
)
from manet_edge.rewrite.base import RewriteContext, RewriteReport, Rule, apply_rules
from manet_edge.rewrite.fuse_mask_mul import SITE_BODIES as MA_BODIES
from manet_edge.rewrite.functions import (
    BODIES,
    MA_DOMAIN,
    MA_OP,
    MA_SITE_OPS,
    count_ma_nodes,
    inline_ma,
)

from manet_edge.rewrite.openvino_pools import pool_maps_as_channels


def ma_rules(body: str = "auto") -> list[Rule]:
    """The MA rules in the order they run."""
    return [cse_mask_branch.RULE, factor_mask_mul.RULE, relu_before_mask_mul.RULE, fuse_mask_mul.make_rule(body),
            separable_mask_pool.RULE, hoist_mask_branch.RULE]


def fold_mask_attention(model: onnx.ModelProto, *, ma_op: str = "fused", body: str = "auto",
                        mask_input: str = "mask") -> tuple[onnx.ModelProto, RewriteReport]:
    """Apply the MA rules to ``model`` (in place) and return it, inlined when ``ma_op='inline'``."""
    if ma_op not in MA_OPS:
        raise ManetEdgeError(f"ma_op must be one of {MA_OPS}, got {ma_op!r}")
    report = apply_rules(model, ma_rules(body), mask_input=mask_input)
    if ma_op == "inline":
        model = inline_ma(model)
    return model, report


RULE_SETS: dict[str, tuple[str, ...]] = {
    "common": (),
    "ma": ("cse_mask_branch", "factor_mask_mul", "relu_before_mask_mul", "fuse_mask_mul", "separable_mask_pool",
           "hoist_mask_branch"),
    "openvino": ("pool_maps_as_channels",),
}
"""Target -> the rules run for it, in order (:func:`ma_rules` builds the ``ma`` set)."""


__all__ = [
    "RULE_SETS", "pool_maps_as_channels",
    "BODIES", "MA_BODIES", "MA_DOMAIN", "MA_OP", "MA_OPS", "MA_SITE_OPS", "RewriteContext", "RewriteReport",
    "Rule", "apply_rules", "count_ma_nodes", "fold_mask_attention", "inline_ma", "ma_rules",
]
