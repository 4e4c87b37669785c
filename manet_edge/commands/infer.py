"""``manet-edge infer FOLDER``: classify every chest X-ray under a folder (torch-free by default).

Exit codes (also in docs/infer.md):
  0  every file was classified (rows may still carry plausibility flags, reported as warnings)
  1  at least one file failed (its row has status=error); the other rows are valid
  2  nothing was run: bad option, empty folder, missing/incompatible models, unusable or
     existing output (without --overwrite); no result file was written
  3  internal error (a bug; the traceback is printed)
  130 interrupted (Ctrl-C): predictions.csv/json were not written (masks already written stay)

Only the standard library, typer and light manet_edge modules are imported at import time; the
pipeline (numpy, scikit-image) and the backend library are imported when the command runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from manet_edge.errors import ManetEdgeError

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class Backend(str, Enum):
    """Inference backends (``manet_edge.runtime.BACKENDS``)."""

    onnxruntime = "onnxruntime"
    openvino = "openvino"
    torch = "torch"
    tensorrt = "tensorrt"


def register(app: typer.Typer) -> None:
    """Add the ``infer`` command to ``app``."""
    app.command("infer", no_args_is_help=True)(infer)


def infer(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, dir_okay=True, readable=True, metavar="FOLDER",
                                  help="Folder of chest X-rays (PNG, JPEG, BMP, TIFF, DICOM), walked recursively."),
    out: Path = typer.Option(Path("manet-edge-results"), "--out", "-o", file_okay=False,
                             help="Output folder for predictions.csv/json (and masks/, overlays/)."),
    backend: Backend = typer.Option(Backend.onnxruntime, "--backend", "-b", help="Inference backend."),
    precision: Optional[str] = typer.Option(
        None, "--precision", "-p",
        help="fp32|fp16|bf16|int8 (f32 also accepted). Default: the model's own precision "
             "(onnxruntime, tensorrt) or fp32 (openvino: set explicitly, never a silent bf16)."),
    models: Optional[Path] = typer.Option(
        None, "--models", "-m", exists=True, file_okay=False, dir_okay=True,
        help="Folder with segmenter.<ext> and classifier.<ext> (.onnx; .pt for torch; .engine for "
             "tensorrt). Default: the models bundled with manet-edge."),
    batch: int = typer.Option(1, "--batch", min=1, max=512, help="Images per model call."),
    save_masks: bool = typer.Option(False, "--save-masks", help="Write masks/<file>.png (0/255, input resolution)."),
    save_overlays: bool = typer.Option(False, "--save-overlays",
                                       help="Write overlays/<file>.png (lung outline + predicted class)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="Threads per model call (default: cores / streams; with one stream, "
                                               "the backend's choice)."),
    workers: int = typer.Option(0, "--workers", min=0,
                                help="Threads for decoding and pre/post-processing (0: one per core, max 4)."),
    streams: int = typer.Option(0, "--streams", min=0, max=64,
                                help="Model streams: threads that each take a batch through every stage "
                                     "(0: one per core on CPU backends, with one model thread each; "
                                     "1 on GPUs, torch and tensorrt)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
) -> None:
    """Segment the lungs and classify every image under FOLDER (normal, covid, tb, bacterial, viral)."""
    try:
        code = run_infer(folder=folder, out=out, backend=backend.value, precision=precision, models=models,
                         batch=batch, save_masks=save_masks, save_overlays=save_overlays, overwrite=overwrite,
                         threads=threads, workers=workers, streams=streams, progress=not no_progress)
    except ManetEdgeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except Exception as exc:  # a bug: keep exit code 1 meaning "some files failed"
        import traceback

        traceback.print_exc(file=sys.stderr)
        typer.echo(f"internal error: {type(exc).__name__}: {exc} (please report this with the traceback above)",
                   err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    raise typer.Exit(code)


def _prepare_output(out: Path) -> None:
    """Create ``out`` if needed and prove it is writable."""
    if out.exists() and not out.is_dir():
        raise ManetEdgeError(f"output path {out} exists and is not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ManetEdgeError(f"output folder {out} is not writable: {exc.strerror or exc}; choose another --out") from exc


def _check_overwrite(out: Path, paths: list[Path], overwrite: bool) -> None:
    """Refuse (OutputExistsError) to replace existing outputs unless ``overwrite``; short message."""
    from manet_edge.errors import OutputExistsError

    if overwrite:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise OutputExistsError(f"refusing to overwrite {len(existing)} existing output file(s): {shown}{more} "
                                "(pass --overwrite to replace them, or choose another --out)")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_streams(backend: str, streams: int, threads: int | None) -> tuple[int, int | None]:
    """(streams, threads per model call) for ``--streams``/``--threads`` (0/None: automatic).

    On a CPU, one model call at a time cannot keep every core busy at batch 1 (small operators,
    barriers), and the decode/clean-up work then steals cores from it; several single-threaded
    streams fill the cores instead (docs/infer.md, "Throughput"). GPUs, torch and TensorRT get
    one stream.
    """
    cpu = backend == "openvino"
    if backend == "onnxruntime":
        import onnxruntime as ort

        cpu = "CUDAExecutionProvider" not in ort.get_available_providers()
    cores = _cpu_count()
    if streams == 0:
        streams = max(1, min(4, cores // (threads or 1))) if cpu else 1
    if streams > 1 and threads is None:
        threads = max(1, cores // streams)
    return streams, threads


def _runner_kwargs(backend: str, threads: int | None, streams: int = 1) -> dict[str, Any]:
    if backend == "onnxruntime":
        return {"threads": threads, "spin": False}
    if backend == "openvino":
        return {"threads": threads, "streams": streams}
    if backend == "torch":
        return {"threads": threads}
    return {}


def run_infer(*, folder: Path, out: Path, backend: str = "onnxruntime", precision: str | None = None,
              models: Path | None = None, batch: int = 1, save_masks: bool = False, save_overlays: bool = False,
              overwrite: bool = False, threads: int | None = None, workers: int = 0, streams: int = 0,
              progress: bool = True) -> int:
    """The ``infer`` command without typer; returns the exit code, raises ManetEdgeError for code 2."""
    from tqdm import tqdm

    from manet_edge.assets import model_paths
    from manet_edge.pipeline import Pipeline, PipelineConfig, walk_folder
    from manet_edge.results import PREDICTIONS_CSV, PREDICTIONS_JSON, ArtifactWriter, artifact_names, write_predictions
    from manet_edge.runtime import backend_info, create_runner, normalise_precision

    folder, out = Path(folder), Path(out)
    info = backend_info(backend)
    precision = normalise_precision(precision, backend)
    seg_path, cls_path = model_paths(models, info.artifact_suffix)
    streams, threads = plan_streams(backend, streams, threads)
    config = PipelineConfig(batch=batch, workers=workers, keep_display=save_overlays,
                            keep_prob=save_masks or save_overlays, streams=streams)
    files = walk_folder(folder, exclude=[out])
    if not files:
        raise ManetEdgeError(f"no files found in {folder} (searched recursively; hidden files are skipped)")
    writer = None
    if save_masks or save_overlays:
        names = artifact_names([f.rel for f in files if not f.error])
        writer = ArtifactWriter(out, names, masks=save_masks, overlays=save_overlays)
    _check_overwrite(out, [out / PREDICTIONS_CSV, out / PREDICTIONS_JSON, *(writer.planned_paths() if writer else [])],
                     overwrite)
    kwargs = _runner_kwargs(backend, threads, streams)
    seg = create_runner(seg_path, backend, precision, name="segmenter", **kwargs)
    cls = create_runner(cls_path, backend, precision, name="classifier", **kwargs)
    pipeline = Pipeline(seg, cls, config)
    pipeline.activate()  # models load and are checked before anything is created on disk
    try:
        _prepare_output(out)
    except ManetEdgeError:
        pipeline.deactivate()
        raise

    bar = tqdm(total=len(files), unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True,
               desc="infer")
    counts = {"ok": 0, "failed": 0, "flagged": 0}

    def on_result(r) -> None:
        if r.ok:
            counts["ok"] += 1
        else:
            counts["failed"] += 1
            bar.write(f"error: {r.file}: {r.error}", file=sys.stderr)
        if r.flags:
            counts["flagged"] += 1
            if r.ok:
                bar.write(f"warning: {r.file}: implausible lung mask ({', '.join(r.flags)}, lung fraction "
                          f"{r.lung_fraction:.3f}); check this prediction", file=sys.stderr)
        bar.update(1)

    started = datetime.now(timezone.utc)
    try:
        results = pipeline.run(files, artifacts=writer, on_result=on_result)
        bar.close()
        meta = _run_meta(pipeline, folder, out, backend, config, threads, counts, len(files), started)
    except KeyboardInterrupt:
        bar.close()
        typer.echo("interrupted: predictions.csv/json were not written", err=True)
        return EXIT_INTERRUPTED
    finally:
        pipeline.deactivate()
    try:
        csv_path, _ = write_predictions(out, results, meta)
    except OSError as exc:
        raise ManetEdgeError(f"cannot write results to {out}: {exc.strerror or exc}") from exc
    wall = pipeline.wall_s
    rate = len(files) / wall if wall > 0 else 0.0
    flagged = f" ({counts['flagged']} flagged)" if counts["flagged"] else ""
    typer.echo(f"{len(files)} files: {counts['ok']} ok{flagged}, {counts['failed']} failed; "
               f"{rate:.1f} images/s on {backend} ({meta['precision']['segmenter']}); results in {csv_path}")
    return EXIT_FILES_FAILED if counts["failed"] else EXIT_OK


def _run_meta(pipeline, folder: Path, out: Path, backend: str, config, threads, counts: dict[str, int],
              n_files: int, started: datetime) -> dict[str, Any]:
    import dataclasses

    from manet_edge.results import library_versions

    def model(runner) -> dict[str, Any]:
        return {"path": str(runner.path), "card": dataclasses.asdict(runner.card), "runner": runner.describe()}

    wall = pipeline.wall_s
    return {
        "created": started.isoformat(timespec="seconds"),
        "input": str(folder.resolve()),
        "output": str(out.resolve()),
        "backend": backend,
        "precision": {"segmenter": pipeline.seg.precision, "classifier": pipeline.cls.precision},
        "models": {"segmenter": model(pipeline.seg), "classifier": model(pipeline.cls)},
        "postprocess": dataclasses.asdict(pipeline.postprocess),
        "config": {"batch": config.batch, "streams": config.streams,
                   "workers": config.n_workers if config.streams == 1 else 0, "threads": threads},
        "libraries": library_versions(backend),
        "host": {"cpu_count": os.cpu_count(), "platform": sys.platform},
        "timings": {"wall_s": round(wall, 6), "images_per_s": round(n_files / wall, 4) if wall > 0 else None,
                    "stages": pipeline.times.to_dict()},
        "summary": {"files": n_files, **counts},
        "finished": datetime.fromtimestamp(time.time(), timezone.utc).isoformat(timespec="seconds"),
    }
