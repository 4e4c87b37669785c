"""Parameter and operation counts of zoo models, by forward hooks on one meta-device forward.

Two conventions (``Convention``):

``thop`` - what the ``thop`` profiler counted for Table 3 of the MANet paper (the numbers it
    prints as "FLOPs" are mostly multiply-accumulates):

    * conv: MACs (``out elements x in_ch/groups x kh x kw``) + 1 per output element if it has a bias
    * linear: MACs (``out elements x in_features``), bias not counted
    * batch norm: 2 per input element
    * adaptive average pool: ``(prod(floor(in/out)) + 1)`` per output element
    * average pool (``nn.AvgPool2d``, so every MA mask pool): 1 per output element
    * everything else free: ReLU, max-pool, sigmoid, concatenation, functional pools
      (``F.avg_pool2d`` / ``F.max_pool2d`` inside Inception modules) and the MA multiply
      (:class:`~manet_edge.models.mask_attention.MaskMul`, a module thop does not know).

    This is why MA costs only +0.15 M (ResNet50) to +0.81 M (VGG16) in Table 3: each mask
    pool counts one op per element of a one-channel map, the multiplies count nothing.

``true`` - the arithmetic an inference engine runs once batch norm is folded into the convs:
    2 per MAC of conv/linear, 1 per output for biases, average pools ``kh x kw`` per output,
    adaptive average pools 1 per input element + 1 per output; MA: every mask pool
    ``kh x kw`` per output and every multiply 1 per feature element; CBAM gates: their pooling
    (1 per element for the channel mean of the spatial gate), the gating multiply (1 per
    element) and the sigmoid/sum on the small gate tensors. ReLU and max are comparisons, free.

The paper's Table 3 is reproduced with **1-channel** 512x512 input and 5 classes (the ResNet
parameter counts rule out 3 channels: 21.29 M / 23.52 M). Run ``python -m
manet_edge.benchmarks.flops`` to rewrite ``benchmarks/results/flops_table.md``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from manet_edge.choices import FLOP_CONVENTIONS
from manet_edge.models import create_model
from manet_edge.models.cbam import ChannelGate, SpatialGate
from manet_edge.models.mask_attention import MaskMul, MaskPool


Convention = Enum("Convention", {name.upper(): name for name in FLOP_CONVENTIONS}, type=str)
"""``THOP`` (the paper's Table 3) or ``TRUE`` (real arithmetic); the names are :data:`manet_edge.choices.FLOP_CONVENTIONS`."""


PAPER_TABLE3: dict[str, tuple[float, float]] = {
    "resnet34": (21.28, 18766.76),
    "resnet34-ma": (21.28, 18766.99),
    "resnet34-cbam": (21.44, 18781.39),
    "resnet50": (23.51, 21058.83),
    "resnet50-ma": (23.51, 21058.98),
    "resnet50-cbam": (26.03, 21099.81),
    "vgg16": (134.29, 80208.35),
    "vgg16-ma": (134.29, 80209.15),
    "inception_v3": (21.80, 17537.14),
    "inception_v3-ma": (21.80, 17537.40),
}
"""Table 3 of the paper: model -> (params in M, thop "FLOPs" in M) at 512x512, 5 classes."""

TABLE3_MODELS: tuple[str, ...] = tuple(PAPER_TABLE3) + ("vgg16-cbam", "inception_v3-cbam")
"""Table 3's rows plus the two CBAM variants the paper did not report."""


@dataclass(frozen=True)
class OpCount:
    """Result of one count. ``ops`` in the chosen convention; ``by_kind`` splits it by layer kind."""

    model: str
    size: int
    in_channels: int
    num_classes: int
    convention: str
    params: int
    ops: int
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def ops_m(self) -> float:
        return self.ops / 1e6

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(params_m=round(self.params_m, 6), ops_m=round(self.ops_m, 6))
        return d


def _prod(vals: Iterable[int]) -> int:
    out = 1
    for v in vals:
        out *= int(v)
    return out


def _conv_macs(m: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> int:
    return y.numel() * (m.in_channels // m.groups) * _prod(m.kernel_size)


def _window(m: nn.AvgPool2d) -> int:
    k = m.kernel_size
    return _prod(k) if isinstance(k, tuple) else int(k) ** 2


def _adaptive_window(x: torch.Tensor, y: torch.Tensor) -> int:
    return _prod(a // b for a, b in zip(x.shape[2:], y.shape[2:]))


# Each counter: (module, first input, output) -> (kind, ops). Looked up along the type's MRO, so a
# MaskPool is counted as a mask pool, not as a plain AvgPool2d.
Counter = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[str, int]]

THOP_COUNTERS: dict[type, Counter] = {
    nn.Conv2d: lambda m, x, y: ("conv", _conv_macs(m, x, y) + (y.numel() if m.bias is not None else 0)),
    nn.Linear: lambda m, x, y: ("linear", y.numel() * m.in_features),
    nn.BatchNorm2d: lambda m, x, y: ("batchnorm", 2 * x.numel()),
    nn.AdaptiveAvgPool2d: lambda m, x, y: ("pool", (_adaptive_window(x, y) + 1) * y.numel()),
    MaskPool: lambda m, x, y: ("mask_attention", y.numel()),
    nn.AvgPool2d: lambda m, x, y: ("pool", y.numel()),
}

TRUE_COUNTERS: dict[type, Counter] = {
    nn.Conv2d: lambda m, x, y: ("conv", 2 * _conv_macs(m, x, y) + (y.numel() if m.bias is not None else 0)),
    nn.Linear: lambda m, x, y: ("linear", 2 * y.numel() * m.in_features + (y.numel() if m.bias is not None else 0)),
    nn.AdaptiveAvgPool2d: lambda m, x, y: ("pool", x.numel() + y.numel()),
    MaskPool: lambda m, x, y: ("mask_attention", _window(m) * y.numel()),
    MaskMul: lambda m, x, y: ("mask_attention", y.numel()),
    nn.AvgPool2d: lambda m, x, y: ("pool", _window(m) * y.numel()),
    # gate tensors are (N,C,1,1): sum of the two MLP outputs + sigmoid; then the gating multiply
    ChannelGate: lambda m, x, y: ("cbam", x.numel() + 2 * x.shape[0] * x.shape[1]),
    # channel mean (1/element), sigmoid on (N,1,H,W), gating multiply (1/element)
    SpatialGate: lambda m, x, y: ("cbam", 2 * x.numel() + x.numel() // x.shape[1]),
}

COUNTERS: dict[Convention, dict[type, Counter]] = {Convention.THOP: THOP_COUNTERS, Convention.TRUE: TRUE_COUNTERS}


def _counter_for(table: dict[type, Counter], mod: nn.Module) -> Counter | None:
    for cls in type(mod).__mro__:
        if cls in table:
            return table[cls]
    return None


def count_ops(model: nn.Module, size: int | tuple[int, int] = 512, *, convention: Convention | str = "thop",
              name: str | None = None) -> OpCount:
    """Count parameters and operations of ``model`` for one ``(1, C, H, W)`` image and its mask.

    The forward runs on the device of the model's parameters (use a meta-device model: no memory,
    no arithmetic; shapes are all the hooks need). Every call of a module is counted (CBAM's shared
    MLP runs twice per gate).
    """
    conv = Convention(convention)
    table = COUNTERS[conv]
    h, w = (size, size) if isinstance(size, int) else size
    param = next(model.parameters())
    in_ch = int(getattr(model, "in_channels", 1))
    totals: dict[str, int] = {}

    def hook(mod, inputs, output):
        kind, ops = _counter_for(table, mod)(mod, inputs[0], output)
        totals[kind] = totals.get(kind, 0) + int(ops)

    handles = [mod.register_forward_hook(hook) for mod in model.modules() if _counter_for(table, mod) is not None]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            image = torch.zeros(1, in_ch, h, w, device=param.device, dtype=param.dtype)
            mask = torch.ones(1, 1, h, w, device=param.device, dtype=param.dtype)
            model(image, mask)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return OpCount(
        model=name or str(getattr(model, "model_name", type(model).__name__)),
        size=h if h == w else -1,
        in_channels=in_ch,
        num_classes=int(getattr(model, "num_classes", -1)),
        convention=conv.value,
        params=sum(p.numel() for p in model.parameters()),
        ops=sum(totals.values()),
        by_kind=dict(sorted(totals.items())),
    )


def count_model(name: str, size: int = 512, *, in_channels: int = 1, num_classes: int = 5,
                convention: Convention | str = "thop") -> OpCount:
    """Build zoo model ``name`` on the meta device and count it (fast, allocates nothing)."""
    with torch.device("meta"):
        model = create_model(name, in_channels=in_channels, num_classes=num_classes)
    return count_ops(model, size, convention=convention, name=name)


def table(models: Iterable[str] = TABLE3_MODELS, size: int = 512, *, in_channels: int = 1,
          num_classes: int = 5, convention: Convention | str = "thop") -> list[dict]:
    """One row per model: our params/ops (M) and, where Table 3 has the model, the paper's and the gap.

    Paper columns are filled only for the paper's setting (thop, 512 px, 1 channel, 5 classes).
    """
    conv = Convention(convention)
    paper_setting = conv is Convention.THOP and size == 512 and in_channels == 1 and num_classes == 5
    rows = []
    for name in models:
        c = count_model(name, size, in_channels=in_channels, num_classes=num_classes, convention=conv)
        row = {"model": name, "params_m": round(c.params_m, 6), "ops_m": round(c.ops_m, 6),
               "paper_params_m": None, "paper_ops_m": None, "ops_diff_pct": None}
        if paper_setting and name in PAPER_TABLE3:
            pp, po = PAPER_TABLE3[name]
            row.update(paper_params_m=pp, paper_ops_m=po, ops_diff_pct=round(100 * (c.ops_m - po) / po, 4) + 0.0)
        rows.append(row)
    return rows


def markdown(rows: list[dict], convention: Convention | str = "thop") -> str:
    """Render :func:`table` rows as a Markdown table."""
    conv = Convention(convention).value
    out = [f"| model | params (M) | paper params (M) | {conv} ops (M) | paper (M) | diff (%) |",
           "|---|---:|---:|---:|---:|---:|"]

    def fmt(v, spec):
        return "" if v is None else format(v + 0.0, spec)

    for r in rows:
        out.append(f"| {r['model']} | {r['params_m']:.2f} | {fmt(r['paper_params_m'], '.2f')} | "
                   f"{r['ops_m']:.2f} | {fmt(r['paper_ops_m'], '.2f')} | {fmt(r['ops_diff_pct'], '+.4f')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the Table 3 comparison (thop and true) to ``benchmarks/results/flops_table.md``."""
    import argparse

    from manet_edge.fileutil import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "flops_table.md")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args(argv)
    text = [
        "# Parameters and operations of the zoo vs Table 3 of the MANet paper",
        "",
        f"Produced by `python -m manet_edge.benchmarks.flops --size {args.size}` "
        f"(torch {torch.__version__}; 1-channel {args.size}x{args.size} input, 5 classes, batch 1; "
        "counted with forward hooks on a meta-device model). Same numbers: "
        "`manet-edge flops --table --convention thop`.",
        "",
        "## thop convention (the paper's)",
        "",
        markdown(table(size=args.size), "thop"),
        "## true convention (2 x MACs + biases + pooling + MA/CBAM elementwise ops; BN folded)",
        "",
        markdown(table(size=args.size, convention="true"), "true"),
    ]
    atomic_write_text(args.out, "\n".join(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
