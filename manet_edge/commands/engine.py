"""``manet-edge engine build|inspect``: TensorRT engines with a manifest beside each one.

Only typer, the standard library and the (equally light) export command module are imported here; TensorRT, CUDA and the export code are
imported inside the command bodies, so ``--help`` works on a machine without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from manet_edge.commands import guard_app
from manet_edge.commands.export import Precision

if TYPE_CHECKING:
    from manet_edge.runtime.engine_manifest import EngineManifest


def register(app: typer.Typer) -> None:
    eng = typer.Typer(help="Build and inspect TensorRT engines (needs the 'trt' extra and an NVIDIA GPU).",
                      no_args_is_help=True)

    @eng.command("build")
    def build(
        onnx: Path = typer.Argument(..., exists=True, dir_okay=False,
                                    help="Exported ONNX (for TensorRT 11 fp16/int8: the *.fp16.onnx / *.int8.onnx)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", dir_okay=False,
                                           help="Engine path (default: <onnx stem>.<precision>.engine beside the ONNX)."),
        precision: Precision = typer.Option(Precision.fp32, "--precision", "-p",
                                                  help="Engine precision; checked after the build."),
        batch: Optional[int] = typer.Option(None, "--batch", min=1,
                                            help="Fixed batch size: min=opt=max (default 1)."),
        min_batch: Optional[int] = typer.Option(None, "--min-batch", min=1, help="Smallest batch of a range profile."),
        opt_batch: Optional[int] = typer.Option(None, "--opt-batch", min=1, help="Batch the kernels are tuned for."),
        max_batch: Optional[int] = typer.Option(None, "--max-batch", min=1, help="Largest batch of a range profile."),
        workspace_mb: int = typer.Option(1024, "--workspace-mb", min=1, help="Builder workspace limit in MiB."),
        timing_cache: Optional[Path] = typer.Option(
            None, "--timing-cache", dir_okay=False,
            help="Timing cache to reuse and update (default: beside the engine, one per TensorRT version and GPU)."),
        dla_core: Optional[int] = typer.Option(None, "--dla-core", min=0,
                                               help="Build for this DLA core (Jetson, TensorRT 10.x, fp16/int8)."),
        calibration_data: Optional[Path] = typer.Option(
            None, "--calibration-data", exists=True,
            help="Calibration images used for the int8 Q/DQ export (hashed into the manifest)."),
        rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild even if an up-to-date engine exists."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show TensorRT's verbose log."),
    ) -> None:
        """Build a TensorRT engine from ONNX, verify its layer precisions, write ENGINE + manifest."""
        from manet_edge.export.engine import build_engine, make_profile

        # errors end through the app's one error-to-exit map (commands.guard_app -> errors.report)
        profile = make_profile(batch, min_batch, opt_batch, max_batch)
        result = build_engine(onnx, out, precision=precision.value, profile=profile, workspace_mb=workspace_mb,
                              timing_cache=timing_cache, dla_core=dla_core, calibration_data=calibration_data,
                              rebuild=rebuild, verbose=verbose)
        status = "up to date" if result.skipped else "built"
        typer.echo(f"{status}: {result.engine_path} ({result.manifest.precision}, TensorRT "
                   f"{result.manifest.env.tensorrt_version}, {result.manifest.env.gpu_name})")

    @eng.command("inspect")
    def inspect(
        engine: Path = typer.Argument(..., exists=True, dir_okay=False, help="Engine file with its manifest beside it."),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest and the check as JSON."),
    ) -> None:
        """Print an engine's manifest and whether it can run on this machine (exit 1 if it cannot)."""
        from manet_edge.errors import ManetEdgeError
        from manet_edge.runtime.engine_manifest import (
            check_compatible,
            errors_only,
            probe_environment,
            read_manifest,
            sha256_file,
        )

        manifest = read_manifest(engine)  # a bad manifest: one line, exit 2 (guard_app)
        onnx = manifest.onnx_path(engine)
        onnx_sha = sha256_file(onnx) if onnx.is_file() else None
        problems, probe_error = [], None
        try:
            problems = check_compatible(manifest, probe_environment(), onnx_sha256=onnx_sha)
        except ManetEdgeError as exc:
            probe_error = str(exc)
        engine_ok = sha256_file(engine) == manifest.engine_sha256
        if as_json:
            typer.echo(json.dumps({
                "manifest": json.loads(manifest.to_json()), "engine_sha256_matches": engine_ok,
                "onnx_found": onnx_sha is not None, "problems": [vars(p) for p in problems],
                "probe_error": probe_error}, indent=2))
        else:
            typer.echo(_describe(engine, manifest, engine_ok, onnx, onnx_sha is not None))
            if probe_error:
                typer.echo(f"this machine: cannot check ({probe_error})")
            elif not problems:
                typer.echo("this machine: compatible")
            for p in problems:
                typer.echo(f"this machine: {p.severity}: {p}")
            if errors_only(problems) or not engine_ok:
                typer.echo(f"to rebuild: {manifest.rebuild_command(engine)}")
        if errors_only(problems) or not engine_ok:
            raise typer.Exit(1)

    guard_app(eng, "engine ")  # errors: the one error-to-exit map (errors.report)
    app.add_typer(eng, name="engine")


def ensure_engine(engine: Path, rebuild: bool = False, echo=typer.echo) -> bool:
    """For `infer --backend tensorrt --rebuild`: rebuild ``engine`` from the ONNX beside it if it
    cannot run here (other TensorRT/GPU, stale ONNX). Returns True if it rebuilt.

    Without ``rebuild`` a mismatch raises EngineMismatchError whose message gives the command.
    Called from command bodies only (it imports the export code).
    """
    from manet_edge.runtime.engine_manifest import (
        EngineMismatchError,
        Problem,
        check_compatible,
        errors_only,
        mismatch_message,
        probe_environment,
        read_manifest,
        sha256_file,
    )

    manifest = read_manifest(engine)
    onnx = manifest.onnx_path(engine)
    problems = errors_only(check_compatible(manifest, probe_environment(),
                                            onnx_sha256=sha256_file(onnx) if onnx.is_file() else None))
    if engine.is_file() and sha256_file(engine) != manifest.engine_sha256:
        problems.append(Problem("engine sha256", manifest.engine_sha256[:12], sha256_file(engine)[:12]))
    if not problems:
        return False
    if not rebuild:
        raise EngineMismatchError(mismatch_message(engine, manifest, problems))
    from manet_edge.export.engine import rebuild_from_manifest

    echo(f"rebuilding {engine}: " + "; ".join(str(p) for p in problems))
    rebuild_from_manifest(engine, echo=echo)
    return True


def _describe(engine: Path, m: "EngineManifest", engine_ok: bool, onnx: Path, onnx_found: bool) -> str:
    env = m.env
    p = m.profile
    counts = ", ".join(f"{k}={v}" for k, v in sorted(m.layer_precisions.items())) or "?"
    lines = [
        f"engine:        {engine} ({'sha256 ok' if engine_ok else 'sha256 DOES NOT MATCH the manifest'})",
        f"built:         {m.built_at} in {m.build_seconds:.1f}s by manet-edge {m.manet_edge_version}",
        f"TensorRT:      {env.tensorrt_version} (CUDA {env.cuda_runtime_version}, driver CUDA {env.cuda_driver_version})",
        f"GPU:           {env.gpu_name} (compute capability {env.compute_capability}, {env.platform or '?'})",
        f"precision:     {m.precision} ({m.build.get('typing', '?')} typing); layers: {counts}",
        f"batch profile: min {p.min} / opt {p.opt} / max {p.max}; inputs: "
        + ", ".join(f"{k} (N, {', '.join(map(str, v))})" for k, v in m.input_shapes.items()),
        f"ONNX:          {onnx} ({'present' if onnx_found else 'missing'}), sha256 {m.onnx_sha256[:16]}",
        f"calibration:   {m.calibration_sha256[:16] if m.calibration_sha256 else '-'}",
        f"MA op:         {m.ma_op}",
        f"DLA core:      {m.build.get('dla_core') if m.build.get('dla_core') is not None else '-'}",
    ]
    return "\n".join(lines)
