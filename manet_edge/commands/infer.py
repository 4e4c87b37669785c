"""``manet-edge infer FOLDER``: classify every chest X-ray under a folder (torch-free by default).

Exit codes (also in docs/infer.md and the README's Troubleshooting section):
  0   every file was classified (rows may still carry plausibility flags, reported as warnings)
  1   at least one file failed (its row has status=error); the other rows are valid
  2   nothing was run: bad option, empty folder, missing extra, missing/incompatible models,
      unusable, locked or existing output (without --overwrite); no result file was written
  3   internal error (a bug; the traceback is printed)
  130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: the work under way finished, nothing new
      started, predictions.csv/json were not written (masks/overlays already written are
      complete files and stay; no temporary file is left)

Only the standard library, typer and light manet_edge modules are imported at import time; the
pipeline (numpy, scikit-image) and the backend library are imported when the command runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer

from manet_edge.commands import choices_enum
from manet_edge.errors import EXIT_FAILED, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, ManetEdgeError, RunInterrupted
from manet_edge.errors import report as report_error
from manet_edge.runtime.backends import backend_names, has_module, runner_kwargs, runs_on_cpu

EXIT_FILES_FAILED = EXIT_FAILED
EXIT_ERROR = EXIT_USAGE
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
__all__ = ["EXIT_ERROR", "EXIT_FILES_FAILED", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TERMINATED",
           "run_infer"]




Backend = choices_enum("Backend", backend_names())
"""``--backend`` choices: the rows of the backend table (:mod:`manet_edge.runtime.backends`)."""


def register(app: typer.Typer) -> None:
    """Add the ``infer`` command to ``app``."""
    global Backend
    Backend = choices_enum("Backend", backend_names())  # rows registered since import count too
    app.command("infer", no_args_is_help=True)(infer)


def infer(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, dir_okay=True, readable=True, metavar="FOLDER",
                                  help="Folder of chest X-rays (PNG, JPEG, BMP, TIFF, DICOM), walked recursively."),
    out: Path = typer.Option(Path("manet-edge-results"), "--out", "-o", file_okay=False,
                             help="Output folder for predictions.csv/json (and masks/, overlays/)."),
    backend: Backend = typer.Option("onnxruntime", "--backend", "-b", help="Inference backend."),
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
    save_heatmaps: bool = typer.Option(False, "--save-heatmaps",
                                       help="Write heatmaps/<file>.png and .npy: the class-activation map of the "
                                            "predicted class (classifiers exported with a 'features' output)."),
    no_gate: bool = typer.Option(False, "--no-gate",
                                 help="Skip the input-domain gate (DICOM tags, polarity, orientation, "
                                      "out-of-distribution score; docs/trust.md)."),
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
    dicom_out: Optional[Path] = typer.Option(
        None, "--dicom-out", file_okay=False,
        help="For every classified DICOM input, write a DICOM SR (classification, probabilities) and a DICOM SEG "
             "(lung mask) here (needs the dicom extra; docs/serving.md)."),
) -> None:
    """Segment the lungs and classify every image under FOLDER (normal, covid, tb, bacterial, viral)."""
    from manet_edge.signals import StopOnSignals, signal_name

    def stopping(signum: int) -> str:
        return (f"{signal_name(signum)}: stopping: the model calls under way finish, no new file starts "
                "(send it again to see that the stop is under way)")

    try:
        with StopOnSignals(stopping) as guard:
            code = run_infer(folder=folder, out=out, backend=Backend(backend).value, precision=precision, models=models,
                             batch=batch, save_masks=save_masks, save_overlays=save_overlays, overwrite=overwrite,
                             threads=threads, workers=workers, streams=streams, progress=not no_progress,
                             stop=guard.event, save_heatmaps=save_heatmaps, gate=not no_gate, dicom_out=dicom_out)
    except Exception as exc:  # ManetEdgeError: 2 (one line); a bug: 3 (traceback); see errors.exit_code
        raise typer.Exit(report_error(exc)) from None
    raise typer.Exit(code)


def _check_stop(stop) -> None:
    if stop is not None and stop.is_set():
        raise RunInterrupted({}, stop.reason, stop.signum)


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_backend_installed(backend: str, info) -> None:
    """Say that a backend's library is missing before anything else (models, folders) is checked."""
    from manet_edge.errors import BackendUnavailableError

    if info.library and not has_module(info.library):
        raise BackendUnavailableError(backend, info.extra, f"{info.library} is not installed")


class _LogProgress:
    """Progress for a log (stderr not a terminal): a plain line every ``every_s`` seconds, no '\\r' frames."""

    def __init__(self, total: int, every_s: float = 30.0, enabled: bool = True):
        self.total, self.every_s, self.enabled = total, every_s, enabled
        self.n = 0
        self._last = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every_s and self.n < self.total:
            self._last = now
            sys.stderr.write(f"infer: {self.n}/{self.total} files\n")
            sys.stderr.flush()

    @staticmethod
    def write(text: str, file=None) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        pass


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
    cpu = runs_on_cpu(backend)
    cores = _cpu_count()
    if streams == 0:
        streams = max(1, min(4, cores // (threads or 1))) if cpu else 1
    if streams > 1 and threads is None:
        threads = max(1, cores // streams)
    return streams, threads


def _runner_kwargs(backend: str, threads: int | None, streams: int = 1) -> dict[str, Any]:
    """The runner options of ``backend``'s table row (ONNX Runtime without spinning: the pool
    threads must leave the cores to the pipeline's CPU stages)."""
    return runner_kwargs(backend, threads=threads, streams=streams, spin=False)


def run_infer(*, folder: Path, out: Path, backend: str = "onnxruntime", precision: str | None = None,
              models: Path | None = None, batch: int = 1, save_masks: bool = False, save_overlays: bool = False,
              overwrite: bool = False, threads: int | None = None, workers: int = 0, streams: int = 0,
              progress: bool = True, stop=None, save_heatmaps: bool = False, gate: bool = True,
              dicom_out: Path | None = None) -> int:
    """The ``infer`` command without typer; returns the exit code (0, 1, 130, 143).

    Raises :class:`ManetEdgeError` for code 2. ``stop`` (a :class:`manet_edge.signals.StopEvent`)
    ends the run early: nothing new starts, the work under way finishes, the lock and every
    temporary file are removed, predictions.csv/json are not written, and 128 + the signal's
    number is returned.
    """
    from manet_edge.assets import model_paths
    from manet_edge.fileutil import OutputLock
    from manet_edge.pipeline import Pipeline, PipelineConfig, walk_folder
    from manet_edge.results import PREDICTIONS_CSV, PREDICTIONS_JSON, ArtifactWriter, artifact_names
    from manet_edge.runtime import backend_info, create_runner, normalise_precision
    from manet_edge.signals import StopEvent

    stop = stop if stop is not None else StopEvent()
    folder, out = Path(folder), Path(out)
    info = backend_info(backend)
    precision = normalise_precision(precision, backend)
    _check_backend_installed(backend, info)
    (seg_path, seg_prec), (cls_path, cls_prec) = model_paths(models, info.artifact_suffix, precision, with_precision=True)
    if out.exists() and _same_folder(out, folder):
        raise ManetEdgeError(f"--out {out} is the input folder {folder}: the results would be read as inputs by the "
                             "next run; choose another --out (a sub-folder is fine: it is skipped when walking)")
    streams, threads = plan_streams(backend, streams, threads)
    config = PipelineConfig(batch=batch, workers=workers, keep_display=save_overlays or save_heatmaps,
                            keep_prob=save_masks or save_overlays or save_heatmaps, streams=streams,
                            heatmaps=save_heatmaps, checks=gate)
    files = walk_folder(folder, exclude=[out])
    if not files:
        raise ManetEdgeError(f"no files found in {folder} (searched recursively; hidden files are skipped)")
    writer = None
    if save_masks or save_overlays or save_heatmaps:
        names = artifact_names([f.rel for f in files if not f.error])
        writer = ArtifactWriter(out, names, masks=save_masks, overlays=save_overlays, heatmaps=save_heatmaps)
    if dicom_out is not None:  # SR + SEG per DICOM input (manet_edge.dicom_out)
        from manet_edge.dicom_out import dicom_writer

        writer = dicom_writer(Path(dicom_out), files, writer)
        config = PipelineConfig(batch=batch, workers=workers, keep_display=save_overlays or save_heatmaps,
                                keep_prob=True, streams=streams, heatmaps=save_heatmaps, checks=gate)
    planned = [out / PREDICTIONS_CSV, out / PREDICTIONS_JSON, *(writer.planned_paths() if writer else [])]
    _check_overwrite(out, planned, overwrite)
    _check_stop(stop)
    kwargs = _runner_kwargs(backend, threads, streams)
    seg = create_runner(seg_path, backend, seg_prec, name="segmenter", **kwargs)
    cls = create_runner(cls_path, backend, cls_prec, name="classifier", **kwargs)
    pipeline = Pipeline(seg, cls, config)
    pipeline.activate()  # models load and are checked before anything is created on disk
    lock = None
    try:
        _check_stop(stop)
        _prepare_output(out)
        lock = OutputLock(out).acquire()  # a second run into this --out is refused, not raced
        _check_overwrite(out, planned, overwrite)  # again, now that no other run can write here
        return _run_locked(pipeline, files, writer, folder, out, backend, config, threads, progress, stop)
    finally:
        pipeline.deactivate()
        if lock is not None:
            lock.release()


def _run_locked(pipeline, files, writer, folder, out, backend, config, threads, progress, stop) -> int:
    """Run the pipeline (the output folder is locked), then write predictions.csv/json."""
    from tqdm import tqdm

    from manet_edge.fileutil import printable_name
    from manet_edge.results import write_predictions
    from manet_edge.signals import exit_code_for

    if progress and sys.stderr.isatty():
        bar = tqdm(total=len(files), unit="img", file=sys.stderr, dynamic_ncols=True, desc="infer")
    else:  # a log: no '\r' frames, a plain line now and then
        bar = _LogProgress(len(files), enabled=progress)
    counts = {"ok": 0, "failed": 0, "flagged": 0}

    def on_result(r) -> None:
        name = printable_name(r.file)
        if r.ok:
            counts["ok"] += 1
            if r.flags:  # only classified rows are "flagged"; an empty mask is an error row
                counts["flagged"] += 1
                lung = [f for f in r.flags if f.startswith("lung_fraction")]
                other = [f for f in r.flags if f not in lung]
                if lung:
                    bar.write(f"warning: {name}: implausible lung mask ({', '.join(lung)}, lung fraction "
                              f"{r.lung_fraction:.3f}); check this prediction", file=sys.stderr)
                if other:
                    bar.write(f"warning: {name}: input unlike the training films ({', '.join(other)}); "
                              "check this prediction (docs/trust.md)", file=sys.stderr)
        else:
            counts["failed"] += 1
            bar.write(f"error: {name}: {printable_name(r.error)}", file=sys.stderr)
        bar.update(1)

    started = datetime.now(timezone.utc)
    try:
        results = pipeline.run(files, artifacts=writer, on_result=on_result, stop=stop)
    except (RunInterrupted, KeyboardInterrupt) as exc:
        bar.close()
        done = len(exc.results) if isinstance(exc, RunInterrupted) else counts["ok"] + counts["failed"]
        signum = stop.signum or getattr(exc, "signum", None) or 2  # a bare KeyboardInterrupt is SIGINT
        kept = " (masks/overlays already written are complete and stay)" if writer is not None else ""
        from manet_edge.signals import signal_name

        typer.echo(f"interrupted by {signal_name(signum)} after {done} of {len(files)} files: "
                   f"predictions.csv/json were not written{kept}", err=True)
        return exit_code_for(signum)
    finally:
        bar.close()
    meta = _run_meta(pipeline, folder, out, backend, config, threads, counts, len(files), started)
    if stop.is_set():  # a signal after the last file, before the results were written
        typer.echo(f"interrupted by {stop.reason} after every file: predictions.csv/json were not written", err=True)
        return exit_code_for(stop.signum or 2)
    try:
        csv_path, _ = write_predictions(out, results, meta)
    except OSError as exc:
        raise ManetEdgeError(f"cannot write results to {out}: {exc.strerror or exc}") from exc
    wall = pipeline.wall_s
    rate = len(files) / wall if wall > 0 else 0.0
    flagged = f" ({counts['flagged']} flagged)" if counts["flagged"] else ""
    typer.echo(f"{len(files)} files: {counts['ok']} ok{flagged}, {counts['failed']} failed; "
               f"{rate:.1f} images/s on {backend} ({meta['precision']['segmenter']}); "
               f"results in {printable_name(str(csv_path))}")
    if stop.is_set():  # the signal came while the (atomic, complete) results were being written
        typer.echo(f"interrupted by {stop.reason} while writing the results; they are complete", err=True)
        return exit_code_for(stop.signum or 2)
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
