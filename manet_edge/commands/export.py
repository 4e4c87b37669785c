"""``manet-edge export``: trained checkpoints (or zoo names) -> ONNX files with model cards.

Only typer and the standard library are imported here; torch, onnx and the runtimes are imported
inside the command body, so ``manet-edge export --help`` works with the base install.

The options become one :class:`manet_edge.export.plan.ExportPlan` and one
:func:`~manet_edge.export.plan.run_export` call. Writes into ``--out``: ``segmenter.onnx`` and
``classifier.onnx`` (fp32), plus
``<name>.fp16.onnx`` or ``classifier.int8.onnx`` for ``--precision fp16|int8``, and with
``--format engine`` a TensorRT engine of each (``manet_edge.export.engine.build_engine``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from manet_edge.choices import CALIB_METHODS, EXPORT_FORMATS, EXPORT_PRECISIONS, MA_BODIES, MA_OPS
from manet_edge.commands import choices_enum, guard_app

# the choices are the library's own tuples (manet_edge.choices), never a copy
MaOp = choices_enum("MaOp", MA_OPS)
MaBody = choices_enum("MaBody", MA_BODIES)
Precision = choices_enum("Precision", EXPORT_PRECISIONS)
CalibMethod = choices_enum("CalibMethod", CALIB_METHODS)
Format = choices_enum("Format", EXPORT_FORMATS)


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
        from manet_edge.export.plan import ExportPlan, run_export

        # errors end through the app's one error-to-exit map (commands.guard_app -> errors.report)
        plan = ExportPlan(
            seg_checkpoint=seg_checkpoint, seg_model=seg_model, cls_checkpoint=cls_checkpoint, cls_model=cls_model,
            out=out, size=size, batch=batch, ma_op=ma_op.value, ma_body=ma_body.value, precision=precision.value,
            calib_dir=calib_dir, calib_seg=calib_seg, calib_limit=calib_limit, calib_method=calib_method.value,
            opset=opset, fmt=fmt.value, verify=verify, overwrite=overwrite, models=models, max_batch=max_batch,
            queue_delay_us=queue_delay_us, instances=instances, gpu=gpu, heatmap_output=heatmap_output,
            ood_data=ood_data, ood_splits=ood_splits, ood_seg=ood_seg)
        run_export(plan, echo=typer.echo)

    guard_app(app)  # errors: the one error-to-exit map (errors.report), whatever app registers this
