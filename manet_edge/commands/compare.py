"""``manet-edge compare FOLDER``: the whole pipeline under two configurations, or one against golden outputs.

Exit codes: 0 every check within its tolerance (or the golden was saved); 1 a check failed (the
report names the files); 2 nothing was compared (bad option, missing models or golden, existing
report without --overwrite); 3 a bug; 130/143 interrupted. Only the standard library, typer and
light manet_edge modules are imported here; the pipeline and the backends when the command runs
(torch never, for onnxruntime and openvino).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from manet_edge.commands import choices_enum
from manet_edge.runtime.backends import backend_names
from manet_edge.errors import EXIT_FAILED, EXIT_OK
from manet_edge.errors import report as report_error

HELP = """Compare the whole pipeline (the one `infer` runs) over FOLDER under two
configurations, file by file, or one configuration against saved golden outputs.

\b
Modes (one at a time):
  A vs B (default): configuration A (--a-*) against B (--b-*). Each --b-*
    option not given is A's: `--b-precision fp16` alone compares precisions;
    no --b-* option at all checks that A is deterministic.
  --golden DIR: A against the outputs saved in DIR; also says which model
    hashes, model cards, library versions and machine entries changed.
  --save-golden DIR: run A and save its outputs, model hashes and cards,
    library versions and machine to DIR (no comparison).

\b
Per file: class flip, max |p_A - p_B| over the 5 probabilities, IoU of the
cleaned lung masks, lung-fraction difference, status difference (an error,
or the file, on one side only). Pass: flips <= --max-flips, every
|p_A - p_B| <= --atol, every mask IoU >= --min-mask-iou, no status differs.
compare.csv and compare.json go to --out.

\b
Exit codes: 0 pass (or golden saved), 1 fail, 2 usage error (nothing
compared), 3 internal error, 130/143 interrupted.
"""


def _command(folder: Path, a, golden: Optional[Path], save_golden: Optional[Path], batch: int, streams: int) -> str:
    """The command line that reruns configuration A this way (kept in the golden manifest)."""
    args = ["manet-edge", "compare", str(folder)]
    if save_golden is not None:
        args += ["--save-golden", str(save_golden)]
    if golden is not None:
        args += ["--golden", str(golden)]
    args += ["--a-backend", a.backend]
    for opt, val in (("--a-precision", a.precision), ("--a-models", a.models), ("--a-threads", a.threads)):
        if val is not None:
            args += [opt, str(val)]
    args += ["--batch", str(batch), "--streams", str(streams)]
    return " ".join(shlex.quote(x) for x in args)


Backend = choices_enum("Backend", backend_names())


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command to ``app``."""
    global Backend
    Backend = choices_enum("Backend", backend_names())
    app.command("compare", no_args_is_help=True, help=HELP)(compare)


def compare(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, dir_okay=True, readable=True, metavar="FOLDER",
                                  help="Folder of chest X-rays, walked recursively as `infer` does."),
    a_backend: Backend = typer.Option("onnxruntime", "--a-backend", help="A: inference backend."),
    a_precision: Optional[str] = typer.Option(None, "--a-precision",
                                              help="A: fp32|fp16|bf16|int8 (default: as `infer --precision`)."),
    a_models: Optional[Path] = typer.Option(None, "--a-models", exists=True, file_okay=False, dir_okay=True,
                                            help="A: models folder (as `infer --models`; default: bundled)."),
    a_threads: Optional[int] = typer.Option(None, "--a-threads", min=1, help="A: threads per model call."),
    b_backend: Optional[Backend] = typer.Option(None, "--b-backend", help="B: inference backend (default: A's)."),
    b_precision: Optional[str] = typer.Option(None, "--b-precision", help="B: precision (default: A's)."),
    b_models: Optional[Path] = typer.Option(None, "--b-models", exists=True, file_okay=False, dir_okay=True,
                                            help="B: models folder (default: A's)."),
    b_threads: Optional[int] = typer.Option(None, "--b-threads", min=1, help="B: threads per model call (default: A's)."),
    golden: Optional[Path] = typer.Option(None, "--golden", file_okay=False, dir_okay=True,
                                          help="Compare A against the golden outputs in this folder."),
    save_golden: Optional[Path] = typer.Option(None, "--save-golden", file_okay=False, dir_okay=True,
                                               help="Run A and save its outputs as golden outputs in this folder."),
    out: Path = typer.Option(Path("manet-edge-compare"), "--out", "-o", file_okay=False,
                             help="Folder for compare.csv and compare.json (comparisons only)."),
    max_flips: int = typer.Option(0, "--max-flips", min=0, help="Most files whose predicted class may differ."),
    atol: float = typer.Option(1e-4, "--atol", min=0.0,
                               help="Largest |p_A - p_B| allowed on any probability. 1e-4 suits one precision "
                                    "(backends, threads, machines, library versions); across precisions "
                                    "(fp16/bf16/int8 vs fp32) pass e.g. --atol 0.02."),
    min_mask_iou: float = typer.Option(0.99, "--min-mask-iou", min=0.0, max=1.0,
                                       help="Smallest IoU allowed between the two cleaned lung masks of a file."),
    batch: int = typer.Option(1, "--batch", min=1, max=512, help="Images per model call (both configurations)."),
    streams: int = typer.Option(0, "--streams", min=0, max=64, help="Model streams, as `infer --streams`."),
    workers: int = typer.Option(0, "--workers", min=0, help="CPU threads, as `infer --workers`."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report or golden."),
) -> None:
    from manet_edge.compare import RunConfig, Tolerances, run_compare, summary_text
    from manet_edge.signals import StopOnSignals, signal_name

    def stopping(signum: int) -> str:
        return f"{signal_name(signum)}: stopping: the model calls under way finish, nothing is compared"

    a = RunConfig(backend=Backend(a_backend).value, precision=a_precision, models=a_models, threads=a_threads)
    b_given = any(v is not None for v in (b_backend, b_precision, b_models, b_threads))
    b = None
    if b_given:
        b = RunConfig(backend=Backend(b_backend).value if b_backend is not None else a.backend,
                      precision=b_precision if b_precision is not None else a.precision,
                      models=b_models if b_models is not None else a.models,
                      threads=b_threads if b_threads is not None else a.threads)
    command = _command(folder, a, golden, save_golden, batch, streams)
    try:
        with StopOnSignals(stopping) as guard:
            result = run_compare(folder, a=a, b=b, golden=golden, save_golden_dir=save_golden, out=out,
                                 tolerances=Tolerances(max_flips=max_flips, atol=atol, min_mask_iou=min_mask_iou),
                                 batch=batch, workers=workers, streams=streams, overwrite=overwrite,
                                 stop=guard.event, command=command)
    except Exception as exc:  # ManetEdgeError: 2 (one line); RunInterrupted: 130/143; a bug: 3
        raise typer.Exit(report_error(exc, "compare")) from None
    if result is None:
        typer.echo(f"golden outputs of {folder} ({a.label()}) saved in {save_golden}")
        raise typer.Exit(EXIT_OK)
    typer.echo(summary_text(result))
    typer.echo(f"report: {out / 'compare.csv'}, {out / 'compare.json'}")
    raise typer.Exit(EXIT_OK if result.passed else EXIT_FAILED)
