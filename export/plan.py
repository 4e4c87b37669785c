"""One export as one object: :class:`ExportPlan` (what the ``manet-edge export`` options ask for)
and :func:`run_export` (do it).

The module itself imports only the standard library and the light core modules (errors, file
helpers), so the CLI can build a plan without torch or onnx; :func:`run_export` imports the
exporter, the quantizer, the verifier, the TensorRT builder or the Triton repository writer when
the plan needs them.

    plan = ExportPlan(cls_checkpoint=Path("best.pt"), out=Path("exported"), precision="fp16")
    written = run_export(plan)          # segmenter/classifier ONNX (+ .fp16.onnx) and their cards

``ExportPlan`` checks the combination it is given before anything is written (both a checkpoint
and a zoo name, int8 without calibration X-rays, ...) with a :class:`~manet_edge.errors.BadInputError`
naming the option, as the command did before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from manet_edge.choices import CALIB_METHODS, EXPORT_FORMATS, EXPORT_PRECISIONS, MA_BODIES, MA_OPS
from manet_edge.errors import BadInputError

SEG_NAME = "segmenter"
CLS_NAME = "classifier"

Echo = Callable[..., None]


def _print(message: str = "", err: bool = False) -> None:
    import sys

    print(message, file=sys.stderr if err else sys.stdout)


@dataclass(frozen=True)
class ExportPlan:
    """Everything one export needs; the field defaults are the command's option defaults."""

    seg_checkpoint: Optional[Path] = None
    seg_model: Optional[str] = None  # 'default', 'paper' or an encoder name: random weights
    cls_checkpoint: Optional[Path] = None
    cls_model: Optional[str] = None  # a zoo name: random weights
    out: Path = Path("exported")
    size: Optional[int] = None  # None: the checkpoint's image_size, else 512
    batch: str = "dynamic"
    ma_op: str = "fused"
    ma_body: str = "auto"
    precision: str = "fp32"
    calib_dir: Optional[Path] = None
    calib_seg: Optional[Path] = None
    calib_limit: int = 64
    calib_method: str = "minmax"
    opset: int = 18
    fmt: str = "onnx"
    verify: bool = False
    overwrite: bool = False
    heatmap_output: bool = True  # classifier: the last feature map as a second output 'features'
    ood_data: Optional[Path] = None  # data root: fit the out-of-distribution score into the classifier's card
    ood_splits: Optional[Path] = None
    ood_seg: Optional[Path] = None  # segmenter ONNX for ood_data (default: the one exported now)
    # --format triton
    models: Optional[Path] = None
    max_batch: int = 4
    queue_delay_us: int = 2000
    instances: int = 1
    gpu: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (("--ma-op", self.ma_op, MA_OPS), ("--ma-body", self.ma_body, MA_BODIES),
                                     ("--precision", self.precision, EXPORT_PRECISIONS),
                                     ("--calib-method", self.calib_method, tuple(CALIB_METHODS)),
                                     ("--format", self.fmt, EXPORT_FORMATS)):
            if value not in allowed:
                raise BadInputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    @property
    def wants_seg(self) -> bool:
        return bool(self.seg_checkpoint or self.seg_model)

    @property
    def wants_cls(self) -> bool:
        return bool(self.cls_checkpoint or self.cls_model)

    def check(self) -> None:
        """Raise :class:`BadInputError` for a combination of options that cannot be exported."""
        if self.seg_checkpoint and self.seg_model:
            raise BadInputError("give --seg-checkpoint or --seg-model, not both")
        if self.cls_checkpoint and self.cls_model:
            raise BadInputError("give --cls-checkpoint or --cls-model, not both")
        if not (self.wants_seg or self.wants_cls):
            raise BadInputError("nothing to export: give --seg-checkpoint/--seg-model and/or --cls-checkpoint/--cls-model")
        if self.batch != "dynamic":
            raise BadInputError(f"--batch must be 'dynamic' (H x W are fixed, the batch is not), got {self.batch!r}")
        if self.precision == "int8":
            if not self.wants_cls:
                raise BadInputError("--precision int8 quantizes the classifier: give --cls-checkpoint or --cls-model")
            if self.calib_dir is None:
                raise BadInputError("--precision int8 needs --calib-dir (a folder of X-rays to calibrate on)")
            if not (self.wants_seg or self.calib_seg):
                raise BadInputError("--precision int8 needs a segmenter to segment the calibration X-rays: "
                                    "export one (--seg-checkpoint) or pass --calib-seg SEGMENTER.onnx")
        if self.ood_data is not None:
            if not self.wants_cls:
                raise BadInputError("--ood-data fits the classifier's out-of-distribution score: give --cls-checkpoint")
            if self.ood_splits is None:
                raise BadInputError("--ood-data needs --ood-splits (the split file whose 'train'/'val' lists are used)")
            if not self.heatmap_output:
                raise BadInputError("--ood-data needs the classifier's 'features' output: drop --no-heatmap-output")
            if not (self.wants_seg or self.ood_seg):
                raise BadInputError("--ood-data needs a segmenter: export one (--seg-checkpoint) or pass --ood-seg")

    def planned(self) -> list[Path]:
        """The ONNX files this plan writes into ``out`` (checked before any is written)."""
        paths: list[Path] = []
        if self.wants_seg:
            paths.append(self.out / f"{SEG_NAME}.onnx")
            if self.precision == "fp16":
                paths.append(self.out / f"{SEG_NAME}.fp16.onnx")
        if self.wants_cls:
            paths.append(self.out / f"{CLS_NAME}.onnx")
            if self.precision != "fp32":
                paths.append(self.out / f"{CLS_NAME}.{self.precision}.onnx")
        return paths


def run_export(plan: ExportPlan, echo: Echo = _print) -> list[Path]:
    """Carry out ``plan``; returns the files written. ``echo(message, err=False)`` reports progress."""
    if plan.fmt == "triton":
        return _run_triton(plan, echo)
    return _run_onnx(plan, echo)


def _run_onnx(plan: ExportPlan, echo: Echo) -> list[Path]:
    from manet_edge.fileutil import check_can_write

    plan.check()
    check_can_write(plan.planned(), plan.overwrite)

    from manet_edge.export.onnx import ExportOptions, export_onnx, source_from_checkpoint, source_from_name

    options = ExportOptions(opset=plan.opset, ma_op=plan.ma_op, ma_body=plan.ma_body, dynamic_batch=True,
                            heatmap_output=plan.heatmap_output)
    written: list[Path] = []
    sources: dict[str, object] = {}
    seg_path: Path | None = None
    for kind, ckpt, name, stem in (("seg", plan.seg_checkpoint, plan.seg_model, SEG_NAME),
                                   ("cls", plan.cls_checkpoint, plan.cls_model, CLS_NAME)):
        if not (ckpt or name):
            continue
        src = (source_from_checkpoint(ckpt, size=plan.size) if ckpt
               else source_from_name(kind, name, size=plan.size or 512))
        if src.kind != kind:
            raise BadInputError(f"--{kind}-checkpoint holds a '{src.kind}' checkpoint", ckpt)
        what = f"{kind} {src.model_name} ({'checkpoint ' + str(ckpt) if ckpt else 'random weights'})"
        echo(f"exporting {what} at {src.input_size}x{src.input_size} ...")
        result = export_onnx(src, plan.out / f"{stem}.onnx", options)
        echo(f"  wrote {result.path}" + (f"  [MA rules: {result.rules}]" if result.rules else ""))
        written.append(result.path)
        sources[str(result.path)] = src.model
        if kind == "seg":
            seg_path = result.path
        if plan.precision == "fp16":
            written.append(_write_fp16(result.path, echo))
    if plan.ood_data is not None:  # before the int8 copy, so it carries the fitted gate too
        from manet_edge.ood_fit import fit_into_card

        echo(f"fitting the out-of-distribution score on {plan.ood_data} ({plan.ood_splits}) ...")
        report = fit_into_card(plan.out / f"{CLS_NAME}.onnx", plan.ood_seg or seg_path, plan.ood_data,
                               plan.ood_splits, echo=echo)
        echo(f"  {report}")
    if plan.precision == "int8":
        written.append(_write_int8(plan.out / f"{CLS_NAME}.onnx", plan.calib_seg or seg_path, plan.calib_dir,
                                   plan.calib_limit, warn_random=bool(plan.seg_model and not plan.calib_seg),
                                   method=plan.calib_method, echo=echo))
    if plan.verify:
        _verify(written, sources, echo)
    if plan.fmt == "engine":
        _build_engines(written, plan.precision, plan.overwrite, echo)
    return written


def _run_triton(plan: ExportPlan, echo: Echo) -> list[Path]:
    """``--format triton``: a Triton model repository in ``plan.out`` (manet_edge.serve.repository)."""
    import tempfile

    from manet_edge.serve.repository import Batching, write_export_repository

    given = plan.wants_seg or plan.wants_cls
    models = plan.models
    if given and models is not None:
        raise BadInputError("--format triton: give checkpoints/zoo names or --models, not both")
    with tempfile.TemporaryDirectory(prefix="manet-edge-export-") as tmp:
        if given:
            if not (plan.wants_seg and plan.wants_cls):
                raise BadInputError("--format triton needs both models: a segmenter and a classifier")
            # the ONNX files only, fp32, into the temporary folder; the repository is the output
            _run_onnx(dataclasses.replace(plan, out=Path(tmp), precision="fp32", calib_dir=None, calib_seg=None,
                                          calib_limit=64, calib_method="minmax", fmt="onnx", verify=False,
                                          overwrite=True, heatmap_output=True, ood_data=None, ood_splits=None,
                                          ood_seg=None), echo)
            models = Path(tmp)
        engines = {}
        if models is not None:
            engines = {role: Path(models) / f"{role}.engine" for role in (SEG_NAME, CLS_NAME)
                       if (Path(models) / f"{role}.engine").is_file()}
        written = write_export_repository(plan.out, models=models,
                                          batching=Batching(plan.max_batch, plan.queue_delay_us, plan.instances),
                                          engines=engines or None, kind="KIND_GPU" if plan.gpu else "KIND_CPU",
                                          overwrite=plan.overwrite)
    for path in written:
        echo(f"  wrote {path}")
    echo(f"Triton model repository in {plan.out}: tritonserver --model-repository {plan.out.resolve()}")
    return list(written)


def engine_jobs(written: list[Path], precision: str) -> list[tuple[Path, str]]:
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


def _build_engines(written: list[Path], precision: str, overwrite: bool, echo: Echo) -> None:
    from manet_edge.export.engine import build_engine

    for path, prec in engine_jobs(written, precision):
        result = build_engine(path, precision=prec, rebuild=overwrite, echo=echo)
        echo(f"  wrote engine {getattr(result, 'path', result)}")


def _write_fp16(fp32_path: Path, echo: Echo) -> Path:
    import onnx

    from manet_edge.export.onnx import check_onnx, save_onnx
    from manet_edge.export.quantize import to_fp16

    model = to_fp16(onnx.load(str(fp32_path)))
    check_onnx(model, str(fp32_path))
    path = save_onnx(model, fp32_path.with_name(fp32_path.stem + ".fp16.onnx"))
    echo(f"  wrote {path}")
    return path


def _write_int8(fp32_path: Path, seg_path: Path | None, calib_dir: Path, limit: int, warn_random: bool,
                method: str, echo: Echo) -> Path:
    from manet_edge.export.quantize import make_reader, quantize_int8
    from manet_edge.metadata import read_onnx_card

    if warn_random:
        echo("warning: calibrating with a random-weight segmenter; masks will not look like lungs", err=True)
    card = read_onnx_card(str(fp32_path))
    reader = make_reader(calib_dir, seg_path, card.input_size, channels=card.in_channels, limit=limit,
                         normalisation=card.normalisation)
    echo(f"calibrating int8 ({method}) on {len(reader)} X-rays from {calib_dir} ...")
    path = quantize_int8(fp32_path, fp32_path.with_name(fp32_path.stem + ".int8.onnx"), reader,
                         calibrate_method=CALIB_METHODS[method])
    echo(f"  wrote {path}")
    return path


def _verify(paths: list[Path], sources: dict[str, object], echo: Echo) -> None:
    from manet_edge.errors import ModelError
    from manet_edge.export.verify import format_table, verify_files

    fp32 = [p for p in paths if p.name.count(".") == 1]
    report = verify_files(fp32, sources)
    echo("")
    echo(format_table(report.rows))
    if not report.ok:
        raise ModelError("parity check failed (see the table above)")
    echo("parity: ok")
