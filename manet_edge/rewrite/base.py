"""The tiny rewrite framework: a rule is a pattern, a check and a rewrite over an ONNX graph.

A :class:`Rule` finds candidate :class:`Match` objects with ``pattern(ctx)``, keeps those that
``check(ctx, match)`` accepts, and applies ``rewrite(ctx, match)`` to each. :func:`apply_rules`
runs the rules in order, each to a fixed point (the context is rebuilt after every rewrite, so a
rule always sees the current graph), and returns a :class:`RewriteReport`. Graphs here have a few
hundred nodes; rebuilding the producer/consumer maps is cheap and keeps the rules simple.

:class:`RewriteContext` carries what the rules share: the model, producer/consumer maps, the
statically known shapes (ONNX shape inference, run once) and the mask analysis of
:mod:`manet_edge.rewrite.analysis`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import onnx
from onnx import helper

from manet_edge.errors import ManetEdgeError


class RewriteError(ManetEdgeError):
    """A rule produced an invalid graph, or the graph cannot be rewritten as asked."""


@dataclass
class Match:
    """One place where a rule applies: the matched nodes plus named tensors the rewrite needs."""

    nodes: tuple[onnx.NodeProto, ...]
    values: dict[str, Any] = field(default_factory=dict)


class RewriteContext:
    """Read-only views of a model's main graph, rebuilt after every rewrite."""

    def __init__(self, model: onnx.ModelProto, *, mask_input: str = "mask",
                 shapes: dict[str, list[int | str | None]] | None = None):
        self.model = model
        self.graph = model.graph
        self.mask_input = mask_input
        self.shapes: dict[str, list[int | str | None]] = shapes if shapes is not None else infer_shapes(model)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.graph_inputs = [vi.name for vi in self.graph.input if vi.name not in self.initializers]
        self.graph_outputs = {vi.name for vi in self.graph.output}
        from manet_edge.rewrite.analysis import mask_analysis

        self.mask = mask_analysis(self)

    def uses(self, name: str) -> int:
        """How many node inputs (plus graph outputs) read tensor ``name``."""
        return len(self.consumers.get(name, ())) + (1 if name in self.graph_outputs else 0)

    def channels(self, name: str) -> int | None:
        """Static channel count (dim 1) of a 4-D tensor, if shape inference knows it."""
        dims = self.shapes.get(name)
        if dims and len(dims) == 4 and isinstance(dims[1], int) and dims[1] > 0:
            return dims[1]
        return None

    def fresh_name(self, base: str) -> str:
        """A tensor/node name not used anywhere in the graph."""
        taken = set(self.producer) | set(self.initializers) | {vi.name for vi in self.graph.input}
        taken |= {n.name for n in self.graph.node}
        if base not in taken:
            return base
        for i in itertools.count(1):
            cand = f"{base}_{i}"
            if cand not in taken:
                return cand
        raise RewriteError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class Rule:
    """A graph rewrite: ``pattern`` proposes matches, ``check`` vets one, ``rewrite`` applies it."""

    name: str
    doc: str
    pattern: Callable[[RewriteContext], Iterable[Match]]
    check: Callable[[RewriteContext, Match], "str | None"]
    """``None`` accepts the match; a string refuses it and says why (kept in the report)."""
    rewrite: Callable[[RewriteContext, Match], None]

    def apply_once(self, ctx: RewriteContext, refused: list[str] | None = None) -> bool:
        for match in self.pattern(ctx):
            reason = self.check(ctx, match)
            if reason is None or reason is True:  # True: an old-style check
                self.rewrite(ctx, match)
                return True
            if refused is not None:
                refused.append(reason if isinstance(reason, str) else "refused (the check gave no reason)")
        return False


@dataclass
class RewriteReport:
    """How often each rule fired, in the order the rules ran."""

    counts: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, dict[str, int]] = field(default_factory=dict)
    """Rule name -> why its check refused matches (reason -> how many times, last pass)."""

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.counts.items()) or "no rules"

    def why_not(self, rule: str) -> list[str]:
        """The reasons ``rule`` refused matches (empty: it refused none)."""
        return sorted(self.refusals.get(rule, {}))


def apply_rules(model: onnx.ModelProto, rules: Iterable[Rule], *, mask_input: str = "mask",
                max_iterations: int = 10_000) -> RewriteReport:
    """Apply ``rules`` in order, each until it no longer matches; ``model`` is changed in place."""
    report = RewriteReport()
    shapes = infer_shapes(model)
    for rule in rules:
        count = 0
        while True:
            topological_sort(model.graph)
            ctx = RewriteContext(model, mask_input=mask_input, shapes=shapes)
            refused: list[str] = []
            if not rule.apply_once(ctx, refused):
                if refused:
                    report.refusals[rule.name] = {r: refused.count(r) for r in dict.fromkeys(refused)}
                break
            count += 1
            if count > max_iterations:
                raise RewriteError(f"rule {rule.name} did not reach a fixed point after {max_iterations} rewrites")
        report.counts[rule.name] = count
    topological_sort(model.graph)
    return report


# ----------------------------------------------------------------------------------------------
# Graph helpers shared by the rules
# ----------------------------------------------------------------------------------------------

def infer_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Tensor name -> dims (int, symbolic name or None) from ONNX shape inference (best effort)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # shape inference is an optimisation aid only; rules fall back to "unknown"
        inferred = model
    out: dict[str, list[int | str | None]] = {}
    graph = inferred.graph
    for vi in itertools.chain(graph.input, graph.value_info, graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    for init in graph.initializer:
        out[init.name] = list(init.dims)
    return out


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as plain Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def node_key(node: onnx.NodeProto) -> tuple:
    """What makes two nodes compute the same thing: op, domain, inputs and attributes."""
    attr_items = tuple(sorted((a.name, a.SerializeToString()) for a in node.attribute))
    return (node.domain, node.op_type, tuple(node.input), attr_items, len(node.output))


def remove_node(graph: onnx.GraphProto, node: onnx.NodeProto) -> None:
    for i, n in enumerate(graph.node):
        if n is node:
            del graph.node[i]
            return
    raise RewriteError(f"node {node.name or node.op_type} is not in the graph")


def replace_node(graph: onnx.GraphProto, old: onnx.NodeProto, new: list[onnx.NodeProto]) -> None:
    """Put ``new`` where ``old`` was (order is fixed up by :func:`topological_sort` at the end)."""
    for i, n in enumerate(graph.node):
        if n is old:
            del graph.node[i]
            for j, m in enumerate(new):
                graph.node.insert(i + j, m)
            return
    raise RewriteError(f"node {old.name or old.op_type} is not in the graph")


def rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node (and graph output) that read ``old`` reads ``new`` instead."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for vi in graph.output:
        if vi.name == old:
            raise RewriteError(f"cannot rename graph output {old!r}")


def topological_sort(graph: onnx.GraphProto, first: Callable[[onnx.NodeProto], bool] | None = None) -> None:
    """Order nodes so each comes after its inputs; stable, and nodes with ``first(node)`` go early.

    Kahn's algorithm with a priority: among the ready nodes, those for which ``first`` is true come
    before the others, then original order. This is how the mask branch is hoisted to the top.
    """
    import heapq

    nodes = list(graph.node)
    available = {vi.name for vi in graph.input} | {t.name for t in graph.initializer} | {""}
    producer_idx: dict[str, int] = {}
    for idx, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer_idx[o] = idx
    waiting = [0] * len(nodes)
    dependents: dict[int, list[int]] = {}
    for idx, n in enumerate(nodes):
        deps = {producer_idx[i] for i in n.input if i and i not in available and i in producer_idx}
        missing = [i for i in n.input if i and i not in available and i not in producer_idx]
        if missing:
            raise RewriteError(f"node {n.name or n.op_type} reads undefined tensors {missing[:5]}")
        waiting[idx] = len(deps)
        for d in deps:
            dependents.setdefault(d, []).append(idx)

    def prio(idx: int) -> tuple[int, int]:
        return (0 if first is not None and first(nodes[idx]) else 1, idx)

    heap = [prio(i) for i in range(len(nodes)) if waiting[i] == 0]
    heapq.heapify(heap)
    order: list[onnx.NodeProto] = []
    while heap:
        _, idx = heapq.heappop(heap)
        order.append(nodes[idx])
        for d in dependents.get(idx, ()):
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(heap, prio(d))
    if len(order) != len(nodes):
        raise RewriteError("graph has a cycle")
    del graph.node[:]
    graph.node.extend(order)
