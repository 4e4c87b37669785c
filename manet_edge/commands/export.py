"""``manet-edge export``: trained checkpoints (or zoo names) -> ONNX files with model cards.

Only typer and the standard library are imported here; torch, onnx and the runtimes are imported
inside the command body, so ``manet-edge export --help`` works with the base install.

Writes into ``--out``: ``segmenter.onnx`` and ``classifier.onnx`` (fp32), plus
``<name>.fp16.onnx`` or ``classifier.int8.onnx`` for ``--precision fp16|int8``, and with
``--format engine`` a TensorRT engine of each (``manet_edge.export.engine.build_engine``).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Optional

import typer

from manet_edge.commands import guard_app


class MaOp(str, enum.Enum):
    fused = "fused"
    inline = "inline"


class MaBody(str, enum.Enum):
    auto = "auto"
    expand = "expand"
    broadcast = "broadcast"


class Precision(str, enum.Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class CalibMethod(str, enum.Enum):
    minmax = "minmax"
    percentile = "percentile"
    entropy = "entropy"


class Format(str, enum.Enum):
    onnx = "onnx"
    engine = "engine"
    triton = "triton"


SEG_NAME = "segmenter"
CLS_NAME = "classifier"


def _batch_is_dynamic(batch: str) -> bool:
    if batch == "dynamic":
        return True
    from manet_edge.errors import BadInputError

    raise BadInputError(f"--batch must be 'dynamic' (H x W are fixed, the batch is not), got {batch!r}")


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        seg_checkpoint: Optional[Path] = typer.Option(None, "--seg-checkpoint", exists=True, dir_okay=False,
                                                      help="Trained segmenter checkpoint (.pt)."),
        seg_model: Optional[str] = typer.Option(None, "--seg-model",
                                                help="Segmenter without a checkpoint, random weights: "
                                                     "'default', 'paper' or an encoder name (resnet18, ...)."),
        cls_checkpoint: Optional[Path] = typer.Option(None, "--cls-checkpoint", exists=True, dir_okay=False,
                                                      help="Trained classifier checkpoint (.pt)."),
        cls_model: Optional[str] = typer.Option(None, "--cls-model",
                                                help="Zoo classifier without a checkpoint, random weights "
                                                     "(e.g. resnet50-ma; see `manet-edge train --help`)."),
        out: Path = typer.Option(Path("exported"), "--out", "-o", file_okay=False, help="Output folder."),
        size: Optional[int] = typer.Option(None, "--size", min=32,
                                           help="Input height = width in pixels (default: the checkpoint's image_size, else 512)."),
        batch: str = typer.Option("dynamic", "--batch", help="Batch dimension: 'dynamic' (H x W stay fixed)."),
        ma_op: MaOp = typer.Option(MaOp.fused, "--ma-op",
                                   help="MA sites as one manet_edge::MaskAttentionMul node each (a local "
                                        "function) or the same graph inlined into standard ops."),
        ma_body: MaBody = typer.Option(MaBody.auto, "--ma-body",
                                       help="How each MA site broadcasts its map: auto (measured per site "
                                            "kind, docs/export.md), expand (1x1 conv to C channels everywhere) "
                                            "or broadcast (the literal X * M)."),
        precision: Precision = typer.Option(Precision.fp32, "--precision", "-p",
                                            help="Also write a reduced-precision classifier (fp16: both models)."),
        calib_dir: Optional[Path] = typer.Option(None, "--calib-dir", exists=True, file_okay=False,
                                                 help="X-rays for int8 calibration (segmented with the exported "
                                                      "or --calib-seg segmenter)."),
        calib_seg: Optional[Path] = typer.Option(None, "--calib-seg", exists=True, dir_okay=False,
                                                 help="Segmenter ONNX that segments the calibration X-rays (default: the one exported now)."),
        calib_limit: int = typer.Option(64, "--calib-limit", min=1, help="Most calibration images to use."),
        calib_method: CalibMethod = typer.Option(
            CalibMethod.minmax, "--calib-method",
            help="How int8 activation ranges are calibrated (onnxruntime's CalibrationMethod)."),
        opset: int = typer.Option(18, "--opset", min=17, help="ONNX opset (>= 17)."),
        fmt: Format = typer.Option(Format.onnx, "--format",
                                   help="onnx, engine (TensorRT, needs a GPU), or triton (a Triton model repository "
                                        "in --out: docs/serving.md)."),
        models: Optional[Path] = typer.Option(None, "--models", exists=True, file_okay=False,
                                              help="--format triton without checkpoints: package this folder's "
                                                   "segmenter/classifier (.onnx, and .engine if present; default: "
                                                   "the bundled models)."),
        max_batch: int = typer.Option(4, "--max-batch", min=1, help="--format triton: max_batch_size."),
        queue_delay_us: int = typer.Option(2000, "--queue-delay-us", min=0,
                                           help="--format triton: dynamic batching queue delay (microseconds)."),
        instances: int = typer.Option(1, "--instances", min=1, help="--format triton: instances per model."),
        gpu: bool = typer.Option(False, "--gpu", help="--format triton: instance groups on the GPU (KIND_GPU)."),
        verify: bool = typer.Option(False, "--verify",
                                    help="Check torch vs ONNX Runtime (and fused vs inlined MA) and print a table."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
        heatmap_output: bool = typer.Option(True, "--heatmap-output/--no-heatmap-output",
                                            help="Classifier: add the last feature map as a second output "
                                                 "'features' (infer --save-heatmaps, the out-of-distribution score)."),
        ood_data: Optional[Path] = typer.Option(None, "--ood-data", exists=True, file_okay=False,
                                                help="Data root (DATA.md layout): fit the out-of-distribution score "
                                                     "on its training split and store it in the classifier's card."),
        ood_splits: Optional[Path] = typer.Option(None, "--ood-splits", exists=True, dir_okay=False,
                                                  help="Split file for --ood-data (e.g. splits/cls.json)."),
        ood_seg: Optional[Path] = typer.Option(None, "--ood-seg", exists=True, dir_okay=False,
                                               help="Segmenter ONNX for --ood-data (default: the one exported now)."),
    ) -> None:
        """Export trained models to ONNX (opset >= 17, dynamic batch) with their model cards."""
        # errors end through the app's one error-to-exit map (commands.guard_app -> errors.report)
        if fmt is Format.triton:
            _run_triton(out, models, max_batch, queue_delay_us, instances, gpu, overwrite,
                        (seg_checkpoint, seg_model, cls_checkpoint, cls_model, size, batch, ma_op.value,
                         opset, ma_body.value))
            return
        _run(seg_checkpoint, seg_model, cls_checkpoint, cls_model, out, size, batch, ma_op.value,
             precision.value, calib_dir, calib_seg, calib_limit, opset, fmt.value, verify, overwrite,
             calib_method.value, ma_body.value, heatmap_output=heatmap_output, ood_data=ood_data,
             ood_splits=ood_splits, ood_seg=ood_seg)

    guard_app(app)  # errors: the one error-to-exit map (errors.report), whatever app registers this


def _run(seg_checkpoint, seg_model, cls_checkpoint, cls_model, out: Path, size, batch: str, ma_op: str,
         precision: str, calib_dir, calib_seg, calib_limit: int, opset: int, fmt: str, verify: bool,
         overwrite: bool, calib_method: str = "minmax", ma_body: str = "auto", *, heatmap_output: bool = True,
         ood_data: Path | None = None, ood_splits: Path | None = None, ood_seg: Path | None = None) -> None:
    from manet_edge.errors import BadInputError
    from manet_edge.fileutil import check_can_write

    if seg_checkpoint and seg_model:
        raise BadInputError("give --seg-checkpoint or --seg-model, not both")
    if cls_checkpoint and cls_model:
        raise BadInputError("give --cls-checkpoint or --cls-model, not both")
    if not any((seg_checkpoint, seg_model, cls_checkpoint, cls_model)):
        raise BadInputError("nothing to export: give --seg-checkpoint/--seg-model and/or --cls-checkpoint/--cls-model")
    dynamic = _batch_is_dynamic(batch)
    want_cls = bool(cls_checkpoint or cls_model)
    if precision == "int8":
        if not want_cls:
            raise BadInputError("--precision int8 quantizes the classifier: give --cls-checkpoint or --cls-model")
        if calib_dir is None:
            raise BadInputError("--precision int8 needs --calib-dir (a folder of X-rays to calibrate on)")
        if not (seg_checkpoint or seg_model or calib_seg):
            raise BadInputError("--precision int8 needs a segmenter to segment the calibration X-rays: "
                                "export one (--seg-checkpoint) or pass --calib-seg SEGMENTER.onnx")
    if ood_data is not None:
        if not want_cls:
            raise BadInputError("--ood-data fits the classifier's out-of-distribution score: give --cls-checkpoint")
        if ood_splits is None:
            raise BadInputError("--ood-data needs --ood-splits (the split file whose 'train'/'val' lists are used)")
        if not heatmap_output:
            raise BadInputError("--ood-data needs the classifier's 'features' output: drop --no-heatmap-output")
        if not (seg_checkpoint or seg_model or ood_seg):
            raise BadInputError("--ood-data needs a segmenter: export one (--seg-checkpoint) or pass --ood-seg")

    planned: list[Path] = []
    if seg_checkpoint or seg_model:
        planned.append(out / f"{SEG_NAME}.onnx")
        if precision == "fp16":
            planned.append(out / f"{SEG_NAME}.fp16.onnx")
    if want_cls:
        planned.append(out / f"{CLS_NAME}.onnx")
        if precision != "fp32":
            planned.append(out / f"{CLS_NAME}.{precision}.onnx")
    check_can_write(planned, overwrite)

    from manet_edge.export.onnx import ExportOptions, export_onnx, source_from_checkpoint, source_from_name

    options = ExportOptions(opset=opset, ma_op=ma_op, ma_body=ma_body, dynamic_batch=dynamic,
                            heatmap_output=heatmap_output)
    written: list[Path] = []
    sources: dict[str, object] = {}
    seg_path: Path | None = None
    for kind, ckpt, name, stem in (("seg", seg_checkpoint, seg_model, SEG_NAME), ("cls", cls_checkpoint, cls_model, CLS_NAME)):
        if not (ckpt or name):
            continue
        src = source_from_checkpoint(ckpt, size=size) if ckpt else source_from_name(kind, name, size=size or 512)
        if src.kind != kind:
            raise BadInputError(f"--{kind}-checkpoint holds a '{src.kind}' checkpoint", ckpt)
        what = f"{kind} {src.model_name} ({'checkpoint ' + str(ckpt) if ckpt else 'random weights'})"
        typer.echo(f"exporting {what} at {src.input_size}x{src.input_size} ...")
        result = export_onnx(src, out / f"{stem}.onnx", options)
        typer.echo(f"  wrote {result.path}" + (f"  [MA rules: {result.rules}]" if result.rules else ""))
        written.append(result.path)
        sources[str(result.path)] = src.model
        if kind == "seg":
            seg_path = result.path
        if precision == "fp16":
            written.append(_write_fp16(result.path))
    if ood_data is not None:  # before the reduced-precision copies, so they carry the fitted gate too
        from manet_edge.ood import fit_into_card

        typer.echo(f"fitting the out-of-distribution score on {ood_data} ({ood_splits}) ...")
        report = fit_into_card(out / f"{CLS_NAME}.onnx", ood_seg or seg_path, ood_data, ood_splits, echo=typer.echo)
        typer.echo(f"  {report}")
    if precision == "int8":
        written.append(_write_int8(out / f"{CLS_NAME}.onnx", calib_seg or seg_path, calib_dir, calib_limit,
                                   warn_random=bool(seg_model and not calib_seg), method=calib_method))
    if verify:
        _verify(written, sources)
    if fmt == "engine":
        _build_engines(written, precision, overwrite)


def _run_triton(out: Path, models: Optional[Path], max_batch: int, queue_delay_us: int, instances: int, gpu: bool,
                overwrite: bool, export_args: tuple) -> None:
    """``--format triton``: a Triton model repository in ``out`` (manet_edge.serve.repository)."""
    import tempfile

    from manet_edge.errors import BadInputError
    from manet_edge.serve.repository import Batching, write_export_repository

    seg_checkpoint, seg_model, cls_checkpoint, cls_model, size, batch, ma_op, opset, ma_body = export_args
    given = any((seg_checkpoint, seg_model, cls_checkpoint, cls_model))
    if given and models is not None:
        raise BadInputError("--format triton: give checkpoints/zoo names or --models, not both")
    with tempfile.TemporaryDirectory(prefix="manet-edge-export-") as tmp:
        if given:
            if not ((seg_checkpoint or seg_model) and (cls_checkpoint or cls_model)):
                raise BadInputError("--format triton needs both models: a segmenter and a classifier")
            _run(seg_checkpoint, seg_model, cls_checkpoint, cls_model, Path(tmp), size, batch, ma_op, "fp32", None,
                 None, 64, opset, "onnx", False, True, "minmax", ma_body)
            models = Path(tmp)
        engines = {}
        if models is not None:
            engines = {role: Path(models) / f"{role}.engine" for role in (SEG_NAME, CLS_NAME)
                       if (Path(models) / f"{role}.engine").is_file()}
        written = write_export_repository(out, models=models, batching=Batching(max_batch, queue_delay_us, instances),
                                          engines=engines or None, kind="KIND_GPU" if gpu else "KIND_CPU",
                                          overwrite=overwrite)
    for path in written:
        typer.echo(f"  wrote {path}")
    typer.echo(f"Triton model repository in {out}: tritonserver --model-repository {out.resolve()}")


def _engine_jobs(written: list[Path], precision: str) -> list[tuple[Path, str]]:
    """(onnx, engine precision) per model: the file of the asked precision, else its fp32 file."""
    jobs = []
    for stem in (SEG_NAME, CLS_NAME):
        reduced = [p for p in written if p.name == f"{stem}.{precision}.onnx"]
        plain = [p for p in written if p.name == f"{stem}.onnx"]
        if reduced:
            jobs.append((reduced[0], precision))
        elif plain:
            jobs.append((plain[0], "fp32"))
    return jobs


def _build_engines(written: list[Path], precision: str, overwrite: bool) -> None:
    from manet_edge.export.engine import build_engine

    for path, prec in _engine_jobs(written, precision):
        result = build_engine(path, precision=prec, rebuild=overwrite, echo=typer.echo)
        typer.echo(f"  wrote engine {getattr(result, 'path', result)}")


def _write_fp16(fp32_path: Path) -> Path:
    import onnx

    from manet_edge.export.onnx import check_onnx, save_onnx
    from manet_edge.export.quantize import to_fp16

    model = to_fp16(onnx.load(str(fp32_path)))
    check_onnx(model, str(fp32_path))
    path = save_onnx(model, fp32_path.with_name(fp32_path.stem + ".fp16.onnx"))
    typer.echo(f"  wrote {path}")
    return path


def _write_int8(fp32_path: Path, seg_path: Path | None, calib_dir: Path, limit: int, warn_random: bool,
                method: str = "minmax") -> Path:
    from manet_edge.export.quantize import make_reader, quantize_int8
    from manet_edge.metadata import read_onnx_card

    if warn_random:
        typer.echo("warning: calibrating with a random-weight segmenter; masks will not look like lungs", err=True)
    card = read_onnx_card(str(fp32_path))
    reader = make_reader(calib_dir, seg_path, card.input_size, channels=card.in_channels, limit=limit,
                         normalisation=card.normalisation)
    typer.echo(f"calibrating int8 ({method}) on {len(reader)} X-rays from {calib_dir} ...")
    path = quantize_int8(fp32_path, fp32_path.with_name(fp32_path.stem + ".int8.onnx"), reader,
                         calibrate_method={"percentile": "Percentile", "minmax": "MinMax", "entropy": "Entropy"}[method])
    typer.echo(f"  wrote {path}")
    return path


def _verify(paths: list[Path], sources: dict[str, object]) -> None:
    from manet_edge.errors import ModelError
    from manet_edge.export.verify import format_table, verify_files

    fp32 = [p for p in paths if p.name.count(".") == 1]
    report = verify_files(fp32, sources)
    typer.echo("")
    typer.echo(format_table(report.rows))
    if not report.ok:
        raise ModelError("parity check failed (see the table above)")
    typer.echo("parity: ok")
