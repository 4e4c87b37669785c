"""Rule ``hoist_mask_branch``: the whole mask pyramid is computed first, straight from ``mask``.

Pattern: a mask-branch node placed after a feature-path node (a naive export interleaves each
block's pools with its convs). Check: always (the branch reads only the mask and constants, so
moving it earlier cannot break a dependency). Rewrite: stable topological re-order that emits
every ready mask-branch node before any feature node. Runtimes that execute nodes in graph order
then compute the pyramid once, up front, out of the feature path's way.
"""

from __future__ import annotations

from typing import Iterator

from manet_edge.rewrite.base import Match, RewriteContext, Rule, topological_sort


def _pattern(ctx: RewriteContext) -> Iterator[Match]:
    seen_feature = False
    for node in ctx.graph.node:
        in_branch = ctx.mask.in_branch(node)
        if in_branch and seen_feature:
            yield Match((node,))
            return
        if not in_branch and not all(i in ctx.mask.constant or not i for i in node.input):
            seen_feature = True


def _check(ctx: RewriteContext, match: Match) -> str | None:
    return None  # the pattern proposes only nodes that can move


def _rewrite(ctx: RewriteContext, match: Match) -> None:
    topological_sort(ctx.graph, first=ctx.mask.in_branch)


RULE = Rule("hoist_mask_branch", __doc__ or "", _pattern, _check, _rewrite)
