"""``manet-edge listen``: DICOM Storage SCP that classifies received CR/DX images and writes SR + SEG
(:mod:`manet_edge.dicom_listen`). SIGINT/SIGTERM stop it (the image being processed finishes).
Standard library and typer only at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from manet_edge.commands.infer import Backend


def register(app: typer.Typer) -> None:
    """Add the ``listen`` command to ``app``."""
    app.command("listen")(listen)


def listen(
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Folder for received files, SR/SEG, predictions.jsonl."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: every interface)."),
    port: int = typer.Option(11112, "--port", min=1, max=65535, help="DICOM port."),
    ae_title: str = typer.Option("MANET-EDGE", "--ae-title", help="This SCP's AE title."),
    forward: Optional[str] = typer.Option(None, "--forward", help="Send each SR and SEG to HOST:PORT (C-STORE)."),
    forward_ae_title: str = typer.Option("ANY-SCP", "--forward-ae-title", help="The destination's AE title."),
    backend: Backend = typer.Option(Backend.onnxruntime, "--backend", "-b", help="Inference backend."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="As for infer."),
    models: Optional[Path] = typer.Option(None, "--models", "-m", exists=True, file_okay=False,
                                          help="Folder with segmenter/classifier models (default: bundled)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads per model call."),
) -> None:
    """Receive chest X-rays over DICOM (C-STORE), classify them, write and optionally forward SR + SEG."""
    from manet_edge.errors import report as report_error
    from manet_edge.signals import StopOnSignals, exit_code_for, signal_name

    try:
        from manet_edge.dicom_listen import Destination, Listener, _pynetdicom
        from manet_edge.dicom_out import _hd
        from manet_edge.serve.engine import BytesPipeline

        _pynetdicom()
        _hd()
        dest = Destination.parse(forward, forward_ae_title) if forward else None
        engine = BytesPipeline.from_options(backend=backend.value, precision=precision, models=models, threads=threads)
        try:
            with StopOnSignals(lambda s: f"{signal_name(s)}: stopping the listener") as guard:
                listener = Listener(engine, out, host=host, port=port, ae_title=ae_title, forward=dest).start()
                typer.echo(f"listening as {ae_title} on {host}:{port}; results in {out}", err=True)
                try:
                    while not guard.event.wait(0.5):
                        pass
                finally:
                    listener.stop()
        finally:
            engine.close()
        typer.echo(f"listener stopped after {listener.handled} instance(s)", err=True)
        raise typer.Exit(exit_code_for(guard.event.signum or 2))
    except typer.Exit:
        raise
    except Exception as exc:
        raise typer.Exit(report_error(exc)) from None
