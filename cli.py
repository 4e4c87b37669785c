"""The ``manet-edge`` command line: one typer app, one sub-module per command group.

Each command lives in ``manet_edge/commands/<name>.py`` and exposes ``register(app)``. Those
modules import only the standard library, typer and light parts of ``manet_edge`` at import
time, so ``manet-edge --help`` and every sub-command's ``--help`` work with the base install
(no torch). Heavy libraries are imported inside the command bodies.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "manet-edge":
    # Run as the command line (not imported): a signal from here on ends with 130/143 and one line.
    from manet_edge.signals import manage_signals

    manage_signals()

import importlib

import typer

from manet_edge.commands import guard_app

app = typer.Typer(
    name="manet-edge",
    help="MANet chest X-ray toolkit: train, export, run and benchmark the two-stage "
    "(lung segmentation + mask-attention CNN) classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order here is the order in `manet-edge --help`.
_COMMAND_MODULES = (
    "infer",
    "compare",
    "export",
    "engine",
    "train",
    "evaluate",
    "gradcam",
    "bench",
    "flops",
    "models",
    "serve",
    "listen",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(f"manet_edge.commands.{_name}").register(app)
guard_app(app)  # every command: one line + exit 2 for a missing extra or a named error, 130/143 on a signal


def _print_version(value: bool) -> None:
    if value:
        from manet_edge import __version__

        typer.echo(f"manet-edge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version, expose_value=False),
) -> None:
    """MANet chest X-ray toolkit."""


def main() -> None:
    """Console-script entry point."""
    from manet_edge.signals import manage_signals

    manage_signals()
    try:
        app()
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    # Not the interpreter's own exit: that resets SIGINT/SIGTERM to "die silently" before its
    # slow native teardown, and a signal there killed finished runs (exit -2/-15).
    from manet_edge.signals import exit_process

    exit_process(code)


if __name__ == "__main__":
    main()
