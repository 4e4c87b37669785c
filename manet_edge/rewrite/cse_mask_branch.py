"""Rule ``cse_mask_branch``: identical mask-branch nodes are computed once.

Pattern: two nodes of the mask branch with the same op, domain, inputs and attributes (for MA:
the same ``AveragePool(k, s, p)`` of the same map, emitted once per site or per block by a naive
export). Check: the op is deterministic and the duplicate's outputs are not graph outputs.
Rewrite: readers of the duplicate read the first node's outputs; the duplicate is removed.
"""

from __future__ import annotations

from typing import Iterator

from manet_edge.rewrite.base import Match, RewriteContext, Rule, node_key, remove_node, rename_input

_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                               "Multinomial", "Bernoulli", "Dropout"})


def _pattern(ctx: RewriteContext) -> Iterator[Match]:
    seen: dict[tuple, object] = {}
    for node in ctx.graph.node:
        if not ctx.mask.in_branch(node):
            continue
        key = node_key(node)
        if key in seen:
            yield Match((seen[key], node))  # type: ignore[arg-type]
        else:
            seen[key] = node


def _check(ctx: RewriteContext, match: Match) -> str | None:
    keep, dup = match.nodes
    if dup.op_type in _NONDETERMINISTIC:
        return f"{dup.op_type} is not deterministic: two calls are not one"
    if any(o in ctx.graph_outputs for o in dup.output):
        return f"{dup.name or dup.output[0]} is a graph output"
    return None


def _rewrite(ctx: RewriteContext, match: Match) -> None:
    keep, dup = match.nodes
    for old, new in zip(dup.output, keep.output):
        if old:
            rename_input(ctx.graph, old, new)
    remove_node(ctx.graph, dup)


RULE = Rule("cse_mask_branch", __doc__ or "", _pattern, _check, _rewrite)
