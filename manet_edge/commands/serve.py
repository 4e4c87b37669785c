"""``manet-edge serve``: NVIDIA Triton Inference Server running the two-stage pipeline (docs/serving.md).

Writes a model repository (one Python-backend model ``manet_edge`` that runs the pipeline on the
chosen backend and precision, with dynamic batching) and runs ``tritonserver`` over it: HTTP and
gRPC inference, ``/v2/health/live`` and ``/v2/health/ready``, Prometheus metrics on their own port.
SIGINT/SIGTERM stop it cleanly (Triton finishes the requests under way, up to ``--exit-timeout``);
the exit code is then 130/143. Standard library and typer only at import time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

from manet_edge.commands.infer import Backend


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: every interface)."),
    http_port: int = typer.Option(8000, "--http-port", min=1, max=65535, help="HTTP/REST port (KServe v2 protocol)."),
    grpc_port: int = typer.Option(8001, "--grpc-port", min=1, max=65535, help="gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", min=1, max=65535, help="Prometheus metrics port."),
    backend: Backend = typer.Option(Backend.onnxruntime, "--backend", "-b", help="Inference backend inside the server."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="As for infer."),
    models: Optional[Path] = typer.Option(None, "--models", "-m", exists=True, file_okay=False,
                                          help="Folder with segmenter/classifier models (default: bundled)."),
    max_batch: int = typer.Option(4, "--max-batch", min=1, max=512, help="Dynamic batching: most requests per call."),
    queue_delay_us: int = typer.Option(2000, "--queue-delay-us", min=0,
                                       help="Dynamic batching: how long a request may wait for others (microseconds)."),
    instances: int = typer.Option(1, "--instances", min=1, max=64, help="Model instances (each a process)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads per model call in each instance."),
    tritonserver: Optional[Path] = typer.Option(None, "--tritonserver",
                                                help="tritonserver binary (default: nvidia-pytriton's, then PATH)."),
    repository: Optional[Path] = typer.Option(None, "--repository", file_okay=False,
                                              help="Write the model repository here and keep it (default: a "
                                                   "temporary folder, removed on exit)."),
    exit_timeout: int = typer.Option(10, "--exit-timeout", min=0, help="Seconds Triton waits for requests under way."),
    ready_timeout: float = typer.Option(300.0, "--ready-timeout", min=1, help="Seconds to wait for the model to load."),
) -> None:
    """Serve the pipeline with Triton: POST an encoded X-ray (PNG/JPEG/TIFF/DICOM), get its predictions.csv row."""
    from manet_edge.errors import report as report_error
    from manet_edge.signals import StopOnSignals, exit_code_for, signal_name

    try:
        from manet_edge.serve.repository import Batching, write_serve_repository
        from manet_edge.serve.tritonserver import TritonServer, find_tritonserver

        dist = find_tritonserver(tritonserver)
        batching = Batching(max_batch, queue_delay_us, instances)
        tmp = None
        if repository is None:
            tmp = tempfile.TemporaryDirectory(prefix="manet-edge-repo-")
            repo = Path(tmp.name)
        else:
            repo = repository
        write_serve_repository(repo, batching=batching, backend=backend.value, precision=precision, models=models,
                               threads=threads, overwrite=tmp is not None)
        server = TritonServer(repo, dist, host=host, http_port=http_port, grpc_port=grpc_port,
                              metrics_port=metrics_port, exit_timeout_s=exit_timeout)
        with StopOnSignals(lambda s: f"{signal_name(s)}: stopping the server (requests under way finish)") as guard:
            server.start()
            try:
                server.wait_ready(ready_timeout, model="manet_edge")
                typer.echo(f"serving manet_edge on http://{server.http_url} (HTTP), {server.grpc_url} (gRPC); "
                           f"metrics {server.metrics_url}; health /v2/health/ready", err=True)
                while not guard.event.wait(0.5):
                    if server.process.poll() is not None:
                        typer.echo(f"tritonserver exited by itself (code {server.process.returncode})", err=True)
                        raise typer.Exit(3)
            finally:
                server.stop()
                if tmp is not None:
                    tmp.cleanup()
        typer.echo("server stopped", err=True)
        raise typer.Exit(exit_code_for(guard.event.signum or 2))
    except typer.Exit:
        raise
    except Exception as exc:
        raise typer.Exit(report_error(exc)) from None
