"""``manet-edge models``: the zoo's model names (architecture x variant), for ``train cls --model``,
``export --cls-model``, ``bench --models`` and ``flops``. Standard library and typer only."""

from __future__ import annotations

import json

import typer

VARIANT_NOTES = {"none": "plain", "ma": "mask attention (the MANet paper, Eq. 1)", "cbam": "CBAM attention"}


def register(app: typer.Typer) -> None:
    """Add the ``models`` command to ``app``."""
    app.command("models")(models)


def models(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {name, architecture, variant}."),
    names_only: bool = typer.Option(False, "--names", help="Print only the names, one a line (for scripts)."),
) -> None:
    """List the zoo's classifier names: every architecture, plain, with mask attention (-ma) or CBAM (-cbam)."""
    from manet_edge.models.zoo import ARCHITECTURES, VARIANTS

    rows = [{"name": arch + suffix, "architecture": arch, "variant": variant}
            for arch in ARCHITECTURES for suffix, variant in VARIANTS.items()]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    if names_only:
        typer.echo("\n".join(r["name"] for r in rows))
        return
    width = max(len(r["name"]) for r in rows) + 2
    suffixes = list(VARIANTS)
    typer.echo("".join(f"{(s or 'plain'):<{width}}" for s in suffixes).rstrip())
    for arch in ARCHITECTURES:
        typer.echo("".join(f"{arch + s:<{width}}" for s in suffixes).rstrip())
    typer.echo("\nvariants: " + "; ".join(f"{s or '(none)'}: {VARIANT_NOTES[v]}" for s, v in VARIANTS.items()))
