"""``manet-edge flops MODEL``: parameters and operations of a zoo model (Table 3 of the paper).

Counts run on a meta-device model (no memory, no arithmetic), so even VGG16 at 512 px takes a
second. Needs the 'train' extra (torch); ``--help`` works without it.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from manet_edge.choices import FLOP_CONVENTIONS
from manet_edge.commands import choices_enum

Convention = choices_enum("Convention", FLOP_CONVENTIONS)
"""How operations are counted: ``thop`` = the paper's Table 3, ``true`` = real arithmetic."""


def register(app: typer.Typer) -> None:
    @app.command("flops")
    def flops(
        models: Optional[List[str]] = typer.Argument(
            None, metavar="MODEL",
            help="Zoo model name(s), e.g. resnet50-ma (`manet-edge models` lists them; default with --table: "
                 "Table 3's models)."),
        size: int = typer.Option(512, "--size", min=1, help="Square input size in pixels."),
        in_channels: int = typer.Option(1, "--in-channels", min=1, help="Image channels (1 reproduces Table 3)."),
        num_classes: int = typer.Option(5, "--num-classes", min=1, help="Classes of the head."),
        convention: Convention = typer.Option(
            Convention.thop, "--convention", case_sensitive=False,
            help="thop: conv/linear MACs, BN 2/element, adaptive avg-pool (k+1)/output, mask pools "
                 "1/output, ReLU/max-pool/MA multiply free (the paper's). true: 2 x MACs + biases "
                 "+ pooling + MA/CBAM elementwise ops, BN folded."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (an object for one model, a list for several)."),
        as_table: bool = typer.Option(False, "--table", help="Print a Markdown table with the paper's Table 3 values."),
    ) -> None:
        """Count parameters and operations (in millions) of zoo models, as in Table 3 of the paper."""
        from manet_edge.models import list_models

        names = list(models or [])
        if not names and not as_table:
            raise typer.BadParameter(f"name a model; valid names: {', '.join(list_models())}", param_hint="MODEL")
        unknown = [n for n in names if n not in list_models()]
        if unknown:
            raise typer.BadParameter(
                f"unknown model {', '.join(repr(n) for n in unknown)}; valid names: {', '.join(list_models())}",
                param_hint="MODEL")
        from manet_edge.benchmarks import flops as counter  # without torch: one line naming the extra (cli)

        if as_table:
            rows = counter.table(names or counter.TABLE3_MODELS, size, in_channels=in_channels,
                                 num_classes=num_classes, convention=convention.value)
            typer.echo(json.dumps(rows, indent=1) if as_json else counter.markdown(rows, convention.value), nl=not as_json)
            if as_json:
                typer.echo("")
            return
        counts = [counter.count_model(n, size, in_channels=in_channels, num_classes=num_classes,
                                      convention=convention.value) for n in names]
        if as_json:
            payload = [c.as_dict() for c in counts]
            typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=1))
            return
        for c in counts:
            typer.echo(f"{c.model}: params {c.params_m:.2f} M, ops {c.ops_m:.2f} M ({c.convention}; "
                       f"1x{c.in_channels}x{size}x{size}, {c.num_classes} classes)")
