"""Parity checks for exported models: torch vs ONNX Runtime, fused vs inlined MA, and OpenVINO.

:func:`verify_export` runs one exported model against its torch source on two input sets:
``random`` (uniform image, random binary mask) and ``blobs`` (lung-like masks: two ellipses with
ragged edges, the kind the segmenter produces) and, for MA models, compares the fused graph
with the same graph inlined. :func:`format_table` prints the rows. The bar (docs/CONTRACTS.md,
ARCHITECTURE "Tests") is fp32 max abs diff <= 1e-4 on the logits.

OpenVINO's ONNX frontend (2026.4) does not read model-local functions, so
:func:`openvino_compile` registers a conversion for ``manet_edge::MaskAttentionMul`` (a broadcast
``Multiply``, exactly the op's definition) before reading a fused model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx

TOLERANCE = 1e-4


@dataclass
class ParityRow:
    model: str
    check: str  # e.g. "torch vs ort (random)"
    max_abs: float
    tolerance: float = TOLERANCE
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.tolerance


@dataclass
class ParityReport:
    rows: list[ParityRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def add(self, model: str, check: str, a: np.ndarray, b: np.ndarray, tol: float = TOLERANCE, note: str = "") -> ParityRow:
        diff = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0
        row = ParityRow(model, check, diff, tol, note)
        self.rows.append(row)
        return row


def format_table(rows: Iterable[ParityRow]) -> str:
    """A Markdown table of parity rows."""
    lines = ["| model | check | max abs diff | tolerance | result |", "|---|---|---|---|---|"]
    for r in rows:
        note = f" ({r.note})" if r.note else ""
        lines.append(f"| {r.model} | {r.check} | {r.max_abs:.2e} | {r.tolerance:.0e} | {'ok' if r.ok else 'FAIL'}{note} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def blob_masks(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n,1,size,size) {0,1} lung-like masks: two ellipses with jittered centres and ragged borders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        inside = np.zeros((size, size), bool)
        for cx in (0.32, 0.68):
            cx += rng.uniform(-0.04, 0.04)
            cy = 0.5 + rng.uniform(-0.05, 0.05)
            ax, ay = rng.uniform(0.11, 0.16), rng.uniform(0.24, 0.33)
            angle = np.arctan2(yy - cy, xx - cx)
            wobble = 1.0 + 0.08 * np.sin(5 * angle + rng.uniform(0, 6.3))
            inside |= ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= wobble
        out[i, 0] = inside
    return out


def input_sets(kind: str, size: int, channels: int = 1, batch: int = 2, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Named feeds: ``random`` and (classifiers) ``blobs``, each a dict of input name -> array."""
    rng = np.random.default_rng(seed)
    if kind == "seg":
        return {"random": {"image": rng.random((batch, channels, size, size), dtype=np.float32)}}
    image = rng.uniform(-1, 1, (batch, channels, size, size)).astype(np.float32)
    random_mask = (rng.random((batch, 1, size, size)) > 0.5).astype(np.float32)
    blobs = blob_masks(batch, size, seed)
    segmented = np.where(blobs > 0, image, -1.0).astype(np.float32)
    return {"random": {"image": image, "mask": random_mask}, "blobs": {"image": segmented, "mask": blobs}}


# ----------------------------------------------------------------------------------------------
# Runners (verification only; the product's runners live in manet_edge.runtime)
# ----------------------------------------------------------------------------------------------

def ort_session(model: onnx.ModelProto | str | Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_ort(model: onnx.ModelProto | str | Path, feed: dict[str, np.ndarray], threads: int = 1) -> np.ndarray:
    sess = ort_session(model, threads)
    names = {i.name for i in sess.get_inputs()}
    return sess.run(["logits"], {k: v for k, v in feed.items() if k in names})[0]


def openvino_extensions() -> list[Any]:
    """OpenVINO frontend conversions for the manet_edge ops (OpenVINO ignores ONNX local functions)."""
    import openvino.opset13 as ops
    from openvino.frontend.onnx import ConversionExtension

    from manet_edge.export.rules.functions import MA_DOMAIN, MA_OP

    def mask_attention_mul(node):
        return [ops.multiply(node.get_input(0), node.get_input(1)).output(0)]

    return [ConversionExtension(MA_OP, MA_DOMAIN, mask_attention_mul)]


def openvino_compile(model: onnx.ModelProto | str | Path, threads: int | None = None, hint: str = "LATENCY"):
    """Compile for the CPU in f32 (``INFERENCE_PRECISION_HINT`` set explicitly)."""
    import openvino as ov

    core = ov.Core()
    for ext in openvino_extensions():
        core.add_extension(ext)
    if isinstance(model, onnx.ModelProto):
        ov_model = core.read_model(model.SerializeToString(), b"")
    else:
        ov_model = core.read_model(str(model))
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return core.compile_model(ov_model, "CPU", config)


def run_openvino(model: onnx.ModelProto | str | Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    compiled = openvino_compile(model, threads=1)
    names = {p.get_any_name() for p in compiled.inputs}
    return np.asarray(compiled({k: v for k, v in feed.items() if k in names})[compiled.output(0)])


def run_torch(torch_model: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        args = [torch.from_numpy(feed["image"])]
        if "mask" in feed:
            args.append(torch.from_numpy(feed["mask"]))
        return torch_model(*args).float().numpy()


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

def verify_export(model: onnx.ModelProto, torch_model: Any | None, *, name: str, kind: str, size: int,
                  channels: int = 1, batch: int = 2, openvino: bool = False, report: ParityReport | None = None,
                  tolerance: float = TOLERANCE) -> ParityReport:
    """Compare an exported (fp32) model with its torch source, its inlined twin and optionally OpenVINO."""
    from manet_edge.export.rules.functions import count_ma_nodes, inline_ma

    report = report or ParityReport()
    fused = count_ma_nodes(model) > 0
    inlined = inline_ma(model) if fused else None
    for set_name, feed in input_sets(kind, size, channels, batch).items():
        ort_out = run_ort(model, feed)
        if torch_model is not None:
            report.add(name, f"torch vs ort ({set_name})", run_torch(torch_model, feed), ort_out, tolerance)
        if inlined is not None:
            report.add(name, f"fused vs inline ({set_name})", ort_out, run_ort(inlined, feed), tolerance)
        if openvino:
            report.add(name, f"ort vs openvino ({set_name})", ort_out, run_openvino(model, feed), tolerance)
    return report


def verify_files(paths: Iterable[str | Path], sources: dict[str, Any] | None = None, *, openvino: bool = False,
                 batch: int = 2) -> ParityReport:
    """``manet-edge export --verify``: check written .onnx files (torch sources keyed by path, optional)."""
    from manet_edge.metadata import read_onnx_card

    report = ParityReport()
    for path in paths:
        card = read_onnx_card(str(path))
        model = onnx.load(str(path))
        torch_model = (sources or {}).get(str(path))
        verify_export(model, torch_model, name=Path(path).name, kind=card.kind, size=card.input_size,
                      channels=card.in_channels, batch=batch, openvino=openvino, report=report)
    return report
