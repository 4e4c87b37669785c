"""``manet-edge compare``: the whole two-stage pipeline under two configurations, or one configuration
against saved golden outputs, file by file.

Each configuration (backend, precision, models folder, threads) runs the pipeline that
``manet-edge infer`` runs: the same model lookup (:func:`manet_edge.assets.model_paths`), the same
runners and stream plan (:mod:`manet_edge.commands.infer`), the same :class:`~manet_edge.pipeline.
Pipeline`. The pipeline's ``artifacts`` hook (where ``infer`` writes mask PNGs) keeps each
cleaned segmenter-size mask in memory instead.

Per file: class flip (the predicted class differs), max |p_A - p_B| over the five probabilities,
IoU of the two cleaned masks (brought to one size, nearest, when the segmenters' sizes differ;
two empty masks: 1), lung-fraction difference, and a status difference (an error on one side
only, or a file on one side only). A comparison passes when flips <= ``max_flips``, every
|p_A - p_B| <= ``atol``, every mask IoU >= ``min_mask_iou`` and no status differs.

A golden folder (``--save-golden DIR``) holds ``manifest.json`` (model files with sha256 and model
cards, library versions, backend and precision, machine), ``outputs.json`` (per file: status,
error, prediction, probabilities, lung fraction, flags) and ``masks.npz`` (the cleaned masks,
compressed, keyed as ``outputs.json`` says). Every file is written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from manet_edge import CLASSES, __version__
from manet_edge.errors import ManetEdgeError
from manet_edge.fileutil import atomic_write_bytes, atomic_write_text, check_can_write, printable_name
from manet_edge.runtime.engine_manifest import sha256_file

GOLDEN_FORMAT = "manet-edge-golden"
GOLDEN_VERSION = 1
MANIFEST_JSON = "manifest.json"
OUTPUTS_JSON = "outputs.json"
MASKS_NPZ = "masks.npz"
GOLDEN_FILES = (MANIFEST_JSON, OUTPUTS_JSON, MASKS_NPZ)
COMPARE_CSV = "compare.csv"
COMPARE_JSON = "compare.json"

DEFAULT_MAX_FLIPS = 0
DEFAULT_ATOL = 1e-4
"""Max |p_A - p_B| by default: two runs of one precision (fp32 ONNX Runtime vs OpenVINO, another
thread count or machine) stay well inside it; across precisions (fp16, bf16, int8 vs fp32) pass a
looser ``--atol`` (e.g. 0.02) and rely on ``--max-flips``."""
DEFAULT_MIN_MASK_IOU = 0.99

CSV_COLUMNS: tuple[str, ...] = (
    "file", "status_a", "status_b", "prediction_a", "prediction_b", "flip", "max_abs_dp", "mask_iou",
    "lung_fraction_a", "lung_fraction_b", "lung_fraction_diff", "flags_a", "flags_b", "error_a", "error_b",
    "outside")
"""``compare.csv``; ``outside`` lists the tolerances the file breaks (flip, atol, mask_iou, status)."""

MACHINE_KEYS = ("cpu", "isa", "native_bf16", "arch")
"""Machine entries whose change is reported (the OS/kernel string is kept in the manifest only)."""


# -- configurations and their outputs --------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """One configuration of the pipeline (the ``--a-*`` or ``--b-*`` options)."""

    backend: str = "onnxruntime"
    precision: str | None = None
    """``None``: the backend's default (see ``manet-edge infer --precision``)."""
    models: Path | None = None
    """``None``: the bundled models."""
    threads: int | None = None
    """Threads per model call; ``None``: as ``infer`` picks them."""

    def label(self) -> str:
        models = "bundled models" if self.models is None else f"models {self.models}"
        threads = "auto" if self.threads is None else str(self.threads)
        return f"{self.backend} {self.precision or 'default precision'}, {models}, threads {threads}"


@dataclass
class FileOutput:
    """What one configuration gave for one file."""

    file: str
    status: str
    error: str = ""
    prediction: str = ""
    probabilities: tuple[float, ...] | None = None
    lung_fraction: float | None = None
    flags: tuple[str, ...] = ()
    mask: np.ndarray | None = None
    """The cleaned segmenter-size mask (bool), ``None`` when the file was not segmented."""


@dataclass
class RunOutput:
    """Every file's output of one configuration, and what it ran with (the golden manifest's ``run``)."""

    rows: dict[str, FileOutput]
    run: dict[str, Any]
    label: str = ""




def machine_info() -> dict[str, Any]:
    """CPU name and extensions (:func:`manet_edge.cpu.describe`), architecture, core count, OS."""
    from manet_edge.cpu import describe

    return {**describe(), "arch": platform.machine(), "cpu_count": os.cpu_count(), "os": platform.platform()}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _model_entry(runner, bundled: bool) -> dict[str, Any]:
    """File, sha256, card and runner details of a model (paths of the bundled models are not kept:
    they name the machine's install location, not the model)."""
    path = Path(runner.path)
    where = "(bundled)" if bundled else str(path.resolve())
    described = _jsonable(runner.describe())
    if "path" in described:
        described["path"] = where
    return {"file": path.name, "path": where, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "precision": runner.precision, "card": _jsonable(dataclasses.asdict(runner.card)), "runner": described}


def run_config(config: RunConfig, files: Sequence[Any], *, batch: int = 1, workers: int = 0, streams: int = 0,
               stop: threading.Event | None = None) -> RunOutput:
    """Run the ``infer`` pipeline of ``config`` over ``files`` (from :func:`manet_edge.pipeline.walk_folder`).

    Model files are found, runners created and streams planned exactly as ``manet-edge infer``
    does. Raises :class:`ManetEdgeError` (models, backend, precision) before any file runs, and
    :class:`~manet_edge.errors.RunInterrupted` when ``stop`` is set.
    """
    from manet_edge.assets import model_paths
    from manet_edge.commands.infer import _check_backend_installed, _runner_kwargs, plan_streams
    from manet_edge.pipeline import Pipeline, PipelineConfig
    from manet_edge.results import library_versions
    from manet_edge.runtime import backend_info, create_runner, normalise_precision

    backend = config.backend
    info = backend_info(backend)
    precision = normalise_precision(config.precision, backend)
    _check_backend_installed(backend, info)
    (seg_path, seg_prec), (cls_path, cls_prec) = model_paths(config.models, info.artifact_suffix, precision,
                                                             with_precision=True)
    n_streams, threads = plan_streams(backend, streams, config.threads)
    pconfig = PipelineConfig(batch=batch, workers=workers, streams=n_streams)
    kwargs = _runner_kwargs(backend, threads, n_streams)
    seg = create_runner(seg_path, backend, seg_prec, name="segmenter", **kwargs)
    cls = create_runner(cls_path, backend, cls_prec, name="classifier", **kwargs)
    pipeline = Pipeline(seg, cls, pconfig)
    masks: dict[str, np.ndarray] = {}

    def keep_mask(item, _post) -> None:  # the hook where `infer` writes mask PNGs
        masks[item.src.rel] = np.asarray(item.mask, dtype=bool).copy()

    pipeline.activate()
    try:
        results = pipeline.run(files, artifacts=keep_mask, stop=stop)
        run = {
            "backend": backend,
            "requested_precision": precision,
            "precision": {"segmenter": seg.precision, "classifier": cls.precision},
            "models_folder": "bundled" if config.models is None else str(Path(config.models).resolve()),
            "models": {"segmenter": _model_entry(seg, config.models is None),
                       "classifier": _model_entry(cls, config.models is None)},
            "postprocess": _jsonable(dataclasses.asdict(pipeline.postprocess)),
            "config": {"batch": batch, "streams": n_streams, "threads": threads,
                       "workers": pconfig.n_workers if n_streams == 1 else 0},
            "libraries": library_versions(backend),
            "machine": machine_info(),
            "wall_s": round(pipeline.wall_s, 4),
        }
    finally:
        pipeline.deactivate()
    rows = {r.file: FileOutput(file=r.file, status=r.status, error=r.error, prediction=r.prediction,
                               probabilities=r.probabilities, lung_fraction=r.lung_fraction, flags=tuple(r.flags),
                               mask=masks.get(r.file))
            for r in results}
    ran = run["precision"]["segmenter"]
    if run["precision"]["classifier"] != ran:
        ran = f"{ran}/{run['precision']['classifier']}"
    return RunOutput(rows=rows, run=run, label=dataclasses.replace(config, precision=ran).label())


# -- golden outputs ------------------------------------------------------------------------------
def golden_paths(folder: Path) -> list[Path]:
    return [Path(folder) / name for name in GOLDEN_FILES]


def save_golden(folder: Path, output: RunOutput, *, source: str = "", command: str = "") -> list[Path]:
    """Write ``output`` as a golden folder (manifest.json, outputs.json, masks.npz), each file atomically."""
    folder = Path(folder)
    rows, arrays = [], {}
    for k, name in enumerate(sorted(output.rows)):
        r = output.rows[name]
        key = None
        if r.mask is not None:
            key = f"m{k:05d}"
            arrays[key] = np.asarray(r.mask, dtype=bool)
        rows.append({"file": printable_name(r.file), "status": r.status, "error": printable_name(r.error),
                     "prediction": r.prediction,
                     "probabilities": None if r.probabilities is None else dict(zip(CLASSES, r.probabilities)),
                     "lung_fraction": r.lung_fraction, "flags": list(r.flags), "mask": key,
                     "mask_shape": None if r.mask is None else list(r.mask.shape)})
    manifest = {"format": GOLDEN_FORMAT, "version": GOLDEN_VERSION,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "manet_edge": __version__, "source": printable_name(source), "command": printable_name(command),
                "files": len(rows), "classes": list(CLASSES), "run": output.run}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    paths = golden_paths(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(paths[2], buf.getvalue())
    atomic_write_text(paths[1], json.dumps({"classes": list(CLASSES), "rows": rows}, indent=1, allow_nan=False,
                                           ensure_ascii=False) + "\n")
    atomic_write_text(paths[0], json.dumps(manifest, indent=2, allow_nan=False, ensure_ascii=False,
                                           default=str) + "\n")
    return paths


def read_golden_manifest(folder: Path) -> dict[str, Any]:
    """The ``manifest.json`` of a golden folder; :class:`ManetEdgeError` when it is not one."""
    folder = Path(folder)
    path = folder / MANIFEST_JSON
    if not folder.is_dir():
        raise ManetEdgeError(f"--golden {folder}: not a folder; write golden outputs with --save-golden DIR first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManetEdgeError(f"--golden {folder}: no {MANIFEST_JSON} (not a golden folder); write one with "
                             "--save-golden DIR") from None
    except (OSError, ValueError) as exc:
        raise ManetEdgeError(f"--golden {folder}: cannot read {MANIFEST_JSON}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != GOLDEN_FORMAT:
        raise ManetEdgeError(f"--golden {folder}: {MANIFEST_JSON} is not a manet-edge golden manifest")
    if manifest.get("version") != GOLDEN_VERSION:
        raise ManetEdgeError(f"--golden {folder}: golden format version {manifest.get('version')} is not "
                             f"{GOLDEN_VERSION}; regenerate it with --save-golden")
    return manifest


def load_golden(folder: Path) -> RunOutput:
    """Read a golden folder written by :func:`save_golden`."""
    folder = Path(folder)
    manifest = read_golden_manifest(folder)
    try:
        doc = json.loads((folder / OUTPUTS_JSON).read_text(encoding="utf-8"))
        with np.load(folder / MASKS_NPZ, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError) as exc:
        raise ManetEdgeError(f"--golden {folder}: cannot read {OUTPUTS_JSON}/{MASKS_NPZ}: {exc}") from None
    classes = tuple(doc.get("classes", ()))
    if classes != CLASSES:
        raise ManetEdgeError(f"--golden {folder}: classes {list(classes)} differ from {list(CLASSES)}")
    rows: dict[str, FileOutput] = {}
    try:
        for d in doc["rows"]:
            probs = d.get("probabilities")
            key = d.get("mask")
            if key is not None and key not in arrays:
                raise KeyError(f"mask {key} of {d['file']} is not in {MASKS_NPZ}")
            rows[d["file"]] = FileOutput(
                file=d["file"], status=d["status"], error=d.get("error", ""), prediction=d.get("prediction", ""),
                probabilities=None if probs is None else tuple(float(probs[c]) for c in CLASSES),
                lung_fraction=d.get("lung_fraction"), flags=tuple(d.get("flags", ())),
                mask=None if key is None else arrays[key].astype(bool))
    except (KeyError, TypeError, ValueError) as exc:
        raise ManetEdgeError(f"--golden {folder}: malformed {OUTPUTS_JSON}: {exc}") from None
    run = manifest.get("run", {})
    prec = run.get("precision") or {}
    ran = prec.get("segmenter", "?") if prec.get("segmenter") == prec.get("classifier") else \
        f"{prec.get('segmenter', '?')}/{prec.get('classifier', '?')}"
    label = (f"golden {folder} ({run.get('backend', '?')} {ran}, {run.get('models_folder', '?')} models, "
             f"saved {manifest.get('created', '?')})")
    return RunOutput(rows=rows, run=run, label=label)


# -- what changed between two runs' environments ---------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One difference between what two runs ran with."""

    kind: str
    """``model``, ``card``, ``library``, ``machine``, ``backend`` or ``precision``."""
    what: str
    a: Any
    b: Any

    def text(self, mode: str = "configs") -> str:
        """``what: B -> A`` against a golden (golden -> now), else ``what: A ... (A), ... (B)``."""
        def show(v: Any) -> str:
            if v is None:
                return "(none)"
            return v[:16] + "..." if isinstance(v, str) and len(v) == 64 else str(v)

        if mode == "golden":
            return f"{self.what}: {show(self.b)} -> {show(self.a)}"
        return f"{self.what}: {show(self.a)} (A), {show(self.b)} (B)"

    def __str__(self) -> str:
        return self.text()


def environment_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    """How run ``a`` differs from run ``b`` (``RunOutput.run``): model hashes and cards, libraries,
    machine, backend and precision. In the messages B comes first (golden -> now)."""
    out: list[Change] = []
    if a.get("backend") != b.get("backend"):
        out.append(Change("backend", "backend", a.get("backend"), b.get("backend")))
    for role in ("segmenter", "classifier"):
        pa, pb = (a.get("precision") or {}).get(role), (b.get("precision") or {}).get(role)
        if pa != pb:
            out.append(Change("precision", f"{role} precision", pa, pb))
    for role in ("segmenter", "classifier"):
        ma, mb = (a.get("models") or {}).get(role) or {}, (b.get("models") or {}).get(role) or {}
        if ma.get("sha256") != mb.get("sha256"):
            out.append(Change("model", f"{role} model sha256", ma.get("sha256"), mb.get("sha256")))
        ca, cb = ma.get("card") or {}, mb.get("card") or {}
        for key in sorted(set(ca) | set(cb)):
            if ca.get(key) != cb.get(key):
                out.append(Change("card", f"{role} card {key}", ca.get(key), cb.get(key)))
    la, lb = a.get("libraries") or {}, b.get("libraries") or {}
    for lib in sorted(set(la) | set(lb)):
        if la.get(lib) != lb.get(lib):
            out.append(Change("library", lib, la.get(lib), lb.get(lib)))
    xa, xb = a.get("machine") or {}, b.get("machine") or {}
    for key in MACHINE_KEYS:
        if xa.get(key) != xb.get(key):
            out.append(Change("machine", f"machine {key}", xa.get(key), xb.get(key)))
    return out


# -- the comparison -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerances:
    max_flips: int = DEFAULT_MAX_FLIPS
    atol: float = DEFAULT_ATOL
    min_mask_iou: float = DEFAULT_MIN_MASK_IOU


@dataclass
class FileDiff:
    """One file's comparison (a ``compare.csv`` row). ``None``: not comparable (missing on a side)."""

    file: str
    status_a: str
    status_b: str
    prediction_a: str = ""
    prediction_b: str = ""
    flip: bool = False
    max_abs_dp: float | None = None
    mask_iou: float | None = None
    lung_fraction_a: float | None = None
    lung_fraction_b: float | None = None
    lung_fraction_diff: float | None = None
    flags_a: tuple[str, ...] = ()
    flags_b: tuple[str, ...] = ()
    error_a: str = ""
    error_b: str = ""
    outside: list[str] = field(default_factory=list)

    @property
    def status_differs(self) -> bool:
        return self.status_a != self.status_b


def _nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[rows][:, cols]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (the smaller brought to the larger's size, nearest); 1 for two empty masks."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        shape = max(a.shape, b.shape, key=lambda s: s[0] * s[1])
        a, b = _nearest(a, shape), _nearest(b, shape)
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union


def compare_file(name: str, a: FileOutput | None, b: FileOutput | None, tol: Tolerances) -> FileDiff:
    d = FileDiff(file=name, status_a=a.status if a else "missing", status_b=b.status if b else "missing")
    if a is not None:
        d.prediction_a, d.lung_fraction_a, d.flags_a, d.error_a = a.prediction, a.lung_fraction, a.flags, a.error
    if b is not None:
        d.prediction_b, d.lung_fraction_b, d.flags_b, d.error_b = b.prediction, b.lung_fraction, b.flags, b.error
    if a is not None and b is not None:
        if a.probabilities is not None and b.probabilities is not None:
            d.max_abs_dp = float(np.max(np.abs(np.asarray(a.probabilities, np.float64)
                                               - np.asarray(b.probabilities, np.float64))))
            d.flip = a.prediction != b.prediction
        if a.mask is not None and b.mask is not None:
            d.mask_iou = mask_iou(a.mask, b.mask)
        if a.lung_fraction is not None and b.lung_fraction is not None:
            d.lung_fraction_diff = abs(float(a.lung_fraction) - float(b.lung_fraction))
    if d.flip:
        d.outside.append("flip")
    if d.max_abs_dp is not None and not d.max_abs_dp <= tol.atol:
        d.outside.append("atol")
    if d.mask_iou is not None and not d.mask_iou >= tol.min_mask_iou:
        d.outside.append("mask_iou")
    if d.status_differs:
        d.outside.append("status")
    return d


@dataclass
class Comparison:
    """Every file's :class:`FileDiff`, the summary against the tolerances, and what changed."""

    files: list[FileDiff]
    tolerances: Tolerances
    label_a: str
    label_b: str
    changes: list[Change]
    run_a: dict[str, Any]
    run_b: dict[str, Any]
    mode: str = "configs"
    """``configs`` (A vs B) or ``golden`` (A vs golden outputs in B)."""

    @property
    def flips(self) -> int:
        return sum(d.flip for d in self.files)

    @property
    def max_abs_dp(self) -> float | None:
        vals = [d.max_abs_dp for d in self.files if d.max_abs_dp is not None]
        return max(vals) if vals else None

    @property
    def min_mask_iou(self) -> float | None:
        vals = [d.mask_iou for d in self.files if d.mask_iou is not None]
        return min(vals) if vals else None

    @property
    def max_lung_fraction_diff(self) -> float | None:
        vals = [d.lung_fraction_diff for d in self.files if d.lung_fraction_diff is not None]
        return max(vals) if vals else None

    @property
    def status_diffs(self) -> int:
        return sum(d.status_differs for d in self.files)

    def checks(self) -> list[tuple[str, Any, str, bool | None]]:
        """(check, value, tolerance, passed); ``passed`` is None for a check that is only reported."""
        t = self.tolerances
        dp, iou = self.max_abs_dp, self.min_mask_iou
        return [
            ("class flips", self.flips, f"<= {t.max_flips}", self.flips <= t.max_flips),
            ("max |p_A - p_B|", dp, f"<= {t.atol:g}", dp is None or dp <= t.atol),
            ("min mask IoU", iou, f">= {t.min_mask_iou:g}", iou is None or iou >= t.min_mask_iou),
            ("max |lung fraction A - B|", self.max_lung_fraction_diff, "(reported)", None),
            ("status differences", self.status_diffs, "= 0", self.status_diffs == 0),
        ]

    @property
    def passed(self) -> bool:
        return all(ok is not False for *_, ok in self.checks())

    @property
    def failing(self) -> list[FileDiff]:
        return [d for d in self.files if d.outside]

    def summary(self) -> dict[str, Any]:
        return {"files": len(self.files), "flips": self.flips, "max_abs_dp": self.max_abs_dp,
                "min_mask_iou": self.min_mask_iou, "max_lung_fraction_diff": self.max_lung_fraction_diff,
                "status_differences": self.status_diffs, "files_outside": len(self.failing),
                "passed": self.passed}


def compare_outputs(a: RunOutput, b: RunOutput, tol: Tolerances = Tolerances(), *, mode: str = "configs") -> Comparison:
    # keyed by the printable name: a golden keeps names that are not UTF-8 escaped (fileutil.printable_name)
    rows_a = {printable_name(k): v for k, v in a.rows.items()}
    rows_b = {printable_name(k): v for k, v in b.rows.items()}
    names = sorted(set(rows_a) | set(rows_b))
    files = [compare_file(n, rows_a.get(n), rows_b.get(n), tol) for n in names]
    return Comparison(files=files, tolerances=tol, label_a=a.label, label_b=b.label,
                      changes=environment_changes(a.run, b.run), run_a=a.run, run_b=b.run, mode=mode)


# -- report ---------------------------------------------------------------------------------------
def report_paths(out: Path) -> list[Path]:
    return [Path(out) / COMPARE_CSV, Path(out) / COMPARE_JSON]


def _fmt(v: Any, col: str) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (tuple, list)):
        return ";".join(map(str, v))
    if isinstance(v, float):
        return f"{v:.6f}" if col in ("mask_iou", "lung_fraction_a", "lung_fraction_b") else f"{v:.6g}"
    return str(v)


def _row(d: FileDiff) -> dict[str, Any]:
    row = {c: getattr(d, c) for c in CSV_COLUMNS}
    row["file"] = printable_name(d.file)
    row["error_a"], row["error_b"] = printable_name(d.error_a), printable_name(d.error_b)
    row["flags_a"], row["flags_b"], row["outside"] = list(d.flags_a), list(d.flags_b), list(d.outside)
    return row


def csv_text(comparison: Comparison) -> str:
    from manet_edge.results import FORMULA_PREFIXES

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for d in comparison.files:
        cells = []
        for col, v in _row(d).items():
            text = _fmt(v, col)
            if col in ("file", "error_a", "error_b"):
                text = " ".join(text.split()) if col != "file" else text
                text = "'" + text if text.startswith(FORMULA_PREFIXES) else text
            cells.append(text)
        writer.writerow(cells)
    return buf.getvalue()


def write_report(out: Path, comparison: Comparison, meta: dict[str, Any] | None = None) -> list[Path]:
    """``compare.csv`` (one row per file) and ``compare.json`` (rows, summary, checks, changes, both runs)."""
    paths = report_paths(out)
    doc = {
        "meta": {**(meta or {}), "mode": comparison.mode, "a": comparison.label_a, "b": comparison.label_b,
                 "tolerances": dataclasses.asdict(comparison.tolerances), "run_a": comparison.run_a,
                 "run_b": comparison.run_b},
        "summary": comparison.summary(),
        "checks": [{"check": c, "value": v, "tolerance": t, "passed": ok} for c, v, t, ok in comparison.checks()],
        "changes": [dataclasses.asdict(c) for c in comparison.changes],
        "columns": list(CSV_COLUMNS),
        "rows": [_row(d) for d in comparison.files],
    }
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths[0], csv_text(comparison))
    atomic_write_text(paths[1], json.dumps(doc, indent=2, allow_nan=False, default=str, ensure_ascii=False) + "\n")
    return paths


def summary_text(c: Comparison, max_files: int = 20) -> str:
    """The summary table, the files outside the tolerances and the changed environment, as printed."""
    def value(v: Any) -> str:
        if v is None:
            return "-"
        if v == 0:
            return "0"
        if isinstance(v, float):
            return f"{v:.6f}" if 1e-3 <= abs(v) or v == 0 else f"{v:.3e}"
        return str(v)

    lines = [f"A: {c.label_a}", f"B: {c.label_b}", f"{len(c.files)} files"]
    rows = [("check", "value", "tolerance", "result")]
    rows += [(name, value(v), tol, "-" if ok is None else ("pass" if ok else "FAIL")) for name, v, tol, ok in c.checks()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        lines.append("  " + "  ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip())
    failing = c.failing
    if failing:
        lines.append(f"{len(failing)} file(s) outside the tolerances:")
        for d in failing[:max_files]:
            bits = []
            if d.status_differs:
                bits.append(f"status {d.status_a} vs {d.status_b}")
            if d.flip:
                bits.append(f"class {d.prediction_a} vs {d.prediction_b}")
            if d.max_abs_dp is not None and "atol" in d.outside:
                bits.append(f"max |dp| {d.max_abs_dp:.3g}")
            if "mask_iou" in d.outside:
                bits.append(f"mask IoU {d.mask_iou:.4f}")
            lines.append(f"  {printable_name(d.file)}: {', '.join(bits)}")
        if len(failing) > max_files:
            lines.append(f"  ... and {len(failing) - max_files} more (see {COMPARE_CSV})")
    if c.changes:
        head = "changed since the golden (golden -> now):" if c.mode == "golden" else "A and B differ in:"
        lines.append(head)
        lines += [f"  [{ch.kind}] {ch.text(c.mode)}" for ch in c.changes]
    elif c.mode == "golden":
        lines.append("unchanged since the golden: model hashes, model cards, library versions, machine, backend, "
                     "precision")
    lines.append("result: " + ("PASS" if c.passed else "FAIL"))
    return "\n".join(lines)


# -- the command without the command line ---------------------------------------------------------
def run_compare(folder: Path, *, a: RunConfig = RunConfig(), b: RunConfig | None = None, golden: Path | None = None,
                save_golden_dir: Path | None = None, out: Path | None = None, tolerances: Tolerances = Tolerances(),
                batch: int = 1, workers: int = 0, streams: int = 0, overwrite: bool = False,
                stop: threading.Event | None = None, command: str = "",
                log: Callable[[str], None] | None = None) -> Comparison | None:
    """``manet-edge compare`` without typer.

    Exactly one mode: ``save_golden_dir`` (run A, write the golden; returns None), ``golden`` (run
    A, compare with the golden), or A against ``b`` (``None``: A against itself, a determinism
    check). ``out``: where ``compare.csv``/``compare.json`` go (comparisons only; ``None``: not
    written). Raises :class:`ManetEdgeError` for a usage problem before anything runs.
    """
    from manet_edge.pipeline import walk_folder

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    folder = Path(folder)
    if save_golden_dir is not None and golden is not None:
        raise ManetEdgeError("--save-golden and --golden cannot be combined: save a golden once, compare against "
                             "it later")
    if (save_golden_dir is not None or golden is not None) and b is not None:
        which = "--save-golden" if save_golden_dir is not None else "--golden"
        raise ManetEdgeError(f"{which} runs one configuration (the --a-* options); drop the --b-* options")
    if not folder.is_dir():
        raise ManetEdgeError(f"{folder}: not a folder")
    for path, opt in ((out, "--out"), (save_golden_dir, "--save-golden")):
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise ManetEdgeError(f"{opt} {path} exists and is not a folder")
        if path is not None and Path(path).exists() and os.path.realpath(path) == os.path.realpath(folder):
            raise ManetEdgeError(f"{opt} {path} is the input folder {folder}; choose another folder")
    golden_run = load_golden(golden) if golden is not None else None
    if save_golden_dir is not None:
        check_can_write(golden_paths(save_golden_dir), overwrite)
    elif out is not None:
        check_can_write(report_paths(out), overwrite)
    exclude = [p for p in (out, save_golden_dir, golden) if p is not None]
    files = walk_folder(folder, exclude=exclude)
    if not files:
        raise ManetEdgeError(f"no files found in {folder} (searched recursively; hidden files are skipped)")

    def run(cfg: RunConfig, name: str) -> RunOutput:
        log(f"compare: {name}: {cfg.label()}: {len(files)} files")
        res = run_config(cfg, files, batch=batch, workers=workers, streams=streams, stop=stop)
        if stop is not None and stop.is_set():
            from manet_edge.errors import RunInterrupted

            raise RunInterrupted({}, getattr(stop, "reason", "interrupt"), getattr(stop, "signum", None))
        return res

    out_a = run(a, "A")
    if save_golden_dir is not None:
        check_can_write(golden_paths(save_golden_dir), overwrite)
        try:
            save_golden(save_golden_dir, out_a, source=str(folder), command=command)
        except OSError as exc:
            raise ManetEdgeError(f"cannot write the golden outputs to {save_golden_dir}: {exc.strerror or exc}") from exc
        return None
    if golden_run is not None:
        comparison = compare_outputs(out_a, golden_run, tolerances, mode="golden")
    else:
        out_b = run(b or a, "B")
        comparison = compare_outputs(out_a, out_b, tolerances)
    if out is not None:
        check_can_write(report_paths(out), overwrite)
        try:
            write_report(out, comparison, {"input": str(folder.resolve()), "command": command,
                                           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        except OSError as exc:
            raise ManetEdgeError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    return comparison
