"""``manet-edge bench``: latency, throughput and MA overhead of zoo models on every backend present.

Backends or precisions this machine lacks are reported as skipped (with the reason), not errors.
Writes ``<name>.json``, ``<name>.md`` and PNG plots under ``--out`` (default
``benchmarks/results/<machine>/``). Exit codes: 0 every target ran (skips are fine), 1 some target
failed while being built or timed (the results of the others are written), 2 bad options or
nothing to run. Only typer and the standard library are imported here; the benchmark modules
(torch, the runtimes, matplotlib) are imported when the command runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from manet_edge.choices import MA_OP_CHOICES, ORT_DEVICES
from manet_edge.commands import choices_enum, guard

from manet_edge.runtime.backends import bench_order

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
DEFAULT_BACKENDS = ",".join(bench_order())
"""Every row of the backend table (:mod:`manet_edge.runtime.backends`) at import time; ``--backends``
left out means every row registered when the command runs."""


MaOp = choices_enum("MaOp", MA_OP_CHOICES)
"""How the MA site is written in the exported ONNX (``manet-edge export --ma-op``, plus ``auto``)."""
Device = choices_enum("Device", ORT_DEVICES)


def _split(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items and what != "precisions":
        raise typer.BadParameter(f"give at least one of {what} (comma-separated)", param_hint=f"--{what}")
    return items


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in _split(text, what)]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=f"--{what}") from None


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""
    app.command("bench")(guard(bench, "bench"))  # errors: the one error-to-exit map (errors.report)


def bench(
    models: str = typer.Option(
        "resnet50,resnet50-ma", "--models", "-m",
        help="Comma-separated: zoo names (timed at every --sizes), NAME@SIZE, .onnx files, or 'defaults' "
             "(the bundled models; the default zoo config when they are absent)."),
    backends: Optional[str] = typer.Option(
        None, "--backends", "-b", show_default=False,
        help=f"Comma-separated backends (default: every one, {DEFAULT_BACKENDS.replace(',', ', ')})."),
    precisions: str = typer.Option(
        "", "--precisions", "-p",
        help="Comma-separated fp32, fp16, bf16, int8 (default: each backend's fp32). Combinations a backend "
             "or this machine cannot run are skipped with the reason."),
    sizes: str = typer.Option("512", "--sizes", help="Comma-separated square input sizes (px)."),
    batches: str = typer.Option("1", "--batches", help="Comma-separated batch sizes."),
    runs: int = typer.Option(20, "--runs", "-n", min=1, help="Timed rounds (one call of every target per round)."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed rounds first."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="Intra-op threads for every backend (default: the backend's own)."),
    device: Device = typer.Option(Device.auto, "--device", help="torch device (auto: cuda when torch sees a GPU)."),
    ma_op: MaOp = typer.Option(MaOp.auto, "--ma-op",
                               help="MA op form in the exported ONNX: fused (one MaskAttentionMul function per "
                                    "site) or inline (plain ONNX ops); auto is fused on every backend."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", file_okay=False,
                                       help="Output folder (default: benchmarks/results/<machine>/)."),
    name: str = typer.Option("bench", "--name", help="Stem of the output files."),
    compare: Optional[Path] = typer.Option(None, "--compare", exists=True, dir_okay=False,
                                           help="An earlier results JSON to compare with (writes <name>_compare.md)."),
    pipeline: bool = typer.Option(False, "--pipeline", help="Also time the two-stage pipeline stage by stage."),
    pipeline_models: Optional[Path] = typer.Option(
        None, "--pipeline-models", exists=True, file_okay=False,
        help="Folder with segmenter/classifier artifacts for --pipeline (default: the bundled models)."),
    pipeline_runs: int = typer.Option(3, "--pipeline-runs", min=1, help="Passes over the sample images."),
    power_seconds: float = typer.Option(3.0, "--power-seconds", min=0.0,
                                        help="Jetson only: seconds of back-to-back calls per target for power."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", file_okay=False,
                                            help="Keep exported ONNX/engines here and reuse them (default: temp)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing result files."),
) -> None:
    """Time zoo models (plain, -ma, -cbam) on every backend and precision present; MA overhead and
    backend-vs-torch ratios are measured interleaved in the same run."""
    model_list = _split(models, "models")
    backend_list = _split(backends if backends is not None else ",".join(bench_order()), "backends")
    precision_list = _split(precisions, "precisions")
    size_list = _ints(sizes, "sizes")
    batch_list = _ints(batches, "batches")
    command = shlex.join([
        "manet-edge", "bench", "--models", ",".join(model_list), "--backends", ",".join(backend_list),
        *(["--precisions", ",".join(precision_list)] if precision_list else []),
        "--sizes", ",".join(map(str, size_list)), "--batches", ",".join(map(str, batch_list)),
        "--runs", str(runs), "--warmup", str(warmup),
        *(["--threads", str(threads)] if threads else []),
        *(["--device", device.value] if device is not Device.auto else []),
        *(["--ma-op", ma_op.value] if ma_op is not MaOp.auto else []),
        *(["--pipeline"] if pipeline else []),
        *(["--pipeline-models", str(pipeline_models)] if pipeline_models else []),
        *(["--pipeline-runs", str(pipeline_runs)] if pipeline and pipeline_runs != 3 else []),
        *(["--out", str(out)] if out else []), *(["--name", name] if name != "bench" else []),
    ])
    # a ManetEdgeError ends through the app's one error-to-exit map (guard_app: one line, exit 2)
    from manet_edge.benchmarks import latency, report
    from manet_edge.benchmarks.env import capture, machine_slug
    from manet_edge.fileutil import check_can_write

    config = latency.BenchConfig(
        models=tuple(model_list), backends=tuple(backend_list), precisions=tuple(precision_list),
        sizes=tuple(size_list), batches=tuple(batch_list), runs=runs, warmup=warmup, threads=threads,
        device=device.value, ma_op=ma_op.value, pipeline=pipeline,
        pipeline_models=str(pipeline_models) if pipeline_models else None, pipeline_runs=pipeline_runs,
        power_seconds=power_seconds, work_dir=str(work_dir) if work_dir else None, command=command)
    out_dir = out or Path("benchmarks") / "results" / machine_slug(capture())
    planned = [out_dir / f"{name}{s}" for s in (".json", ".md", "_latency.png", "_ma_overhead.png")]
    check_can_write(planned + ([out_dir / f"{name}_compare.md"] if compare else []), overwrite)
    if compare is not None:
        report.load(compare)  # a wrong file fails now, not after the whole run
    notes: list[str] = []
    targets, _skips = latency.plan(config, notes)
    if not targets and not pipeline:
        from manet_edge.benchmarks.targets import ZOO_NEEDS_TORCH
        from manet_edge.errors import BackendUnavailableError

        if _skips and all(s.reason == ZOO_NEEDS_TORCH or "not installed" in s.reason for s in _skips) \
                and any(s.reason == ZOO_NEEDS_TORCH for s in _skips):
            raise BackendUnavailableError("torch", "train", "zoo models are built with torch; without it, "
                                          "time .onnx files or --models defaults")
        typer.echo("error: nothing to run on this machine (every target was skipped):", err=True)
        for s in _skips:
            typer.echo(f"  {s.what}: {s.reason}", err=True)
        raise typer.Exit(EXIT_ERROR)
    doc = latency.run(config, log=lambda m: typer.echo(m, err=True))
    written = report.write_all(doc, out_dir, name, compare_with=compare)
    for path in written:
        typer.echo(str(path))
    raise typer.Exit(EXIT_FAILED if doc["failed"] else EXIT_OK)
