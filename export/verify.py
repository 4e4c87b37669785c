"""Parity checks for exported models: torch vs ONNX Runtime, fused vs inlined MA, and OpenVINO.

:func:`verify_export` runs one exported model against its torch source on two input sets:
``random`` (uniform image, random binary mask) and ``blobs`` (lung-like masks: two ellipses with
ragged edges, the kind the segmenter produces) and, for MA models, compares the fused graph
with the same graph inlined. :func:`format_table` prints the rows. The bar (docs/CONTRACTS.md,
ARCHITECTURE "Tests") is fp32 max abs diff <= 1e-4 on the logits.

OpenVINO's ONNX frontend (2026.4) cannot convert the MA op's model-local function, so
:func:`openvino_compile` registers the runtime's conversion for ``manet_edge::MaskAttentionMul``
(a broadcast ``Multiply``, exactly the op's definition; :mod:`manet_edge.runtime.openvino`)
before reading a fused model, as the OpenVINO runner does.
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
    scale: float = 0.0  # max |logit| of the reference, to show the diff is not trivially small

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
        scale = float(np.max(np.abs(a))) if np.size(a) else 0.0
        row = ParityRow(model, check, diff, tol, note, scale)
        self.rows.append(row)
        return row


def format_table(rows: Iterable[ParityRow]) -> str:
    """A Markdown table of parity rows."""
    lines = ["| model | check | max abs diff | max abs logit | tolerance | result |", "|---|---|---|---|---|---|"]
    for r in rows:
        note = f" ({r.note})" if r.note else ""
        lines.append(f"| {r.model} | {r.check} | {r.max_abs:.2e} | {r.scale:.3g} | {r.tolerance:.0e} | "
                     f"{'ok' if r.ok else 'FAIL'}{note} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def randomize_like_trained(model: Any, seed: int = 0, *, size: int = 64, in_channels: int = 1,
                           target: float = 8.0) -> Any:
    """Give a freshly initialised torch classifier trained-looking BN statistics and O(target) logits.

    A fresh model has identity BN statistics and a tiny head, so its logits are ~0 and any parity
    check passes trivially. This sets random BN statistics/affines, then rescales the last
    ``Linear`` (the head is positively homogeneous) so the largest |logit| on lung-like inputs of
    ``size`` is ``target``, like a trained 5-class model.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    linears = []
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            elif isinstance(mod, torch.nn.Linear):
                linears.append(mod)
        model.eval()
        if linears:
            feed = input_sets("cls", size, in_channels, batch=2, seed=seed, real=False)["blobs"]
            peak = float(np.abs(run_torch(model, feed)).max())
            if peak > 0:
                linears[-1].weight.mul_(target / peak)
                linears[-1].bias.mul_(target / peak)
    return model


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


def input_sets(kind: str, size: int, channels: int = 1, batch: int = 2, seed: int = 0,
               real: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Named feeds, each a dict of input name -> array: ``random``; for classifiers also ``blobs``
    (lung-like blob masks) and, with ``real``, ``real`` (:func:`real_inputs`) when the package's
    sample X-rays and default segmenter are there."""
    rng = np.random.default_rng(seed)
    if kind == "seg":
        return {"random": {"image": rng.random((batch, channels, size, size), dtype=np.float32)}}
    image = rng.uniform(-1, 1, (batch, channels, size, size)).astype(np.float32)
    random_mask = (rng.random((batch, 1, size, size)) > 0.5).astype(np.float32)
    blobs = blob_masks(batch, size, seed)
    segmented = np.where(blobs > 0, image, -1.0).astype(np.float32)
    sets = {"random": {"image": image, "mask": random_mask}, "blobs": {"image": segmented, "mask": blobs}}
    feed = real_inputs(size, channels, batch) if real else None
    if feed is not None:
        sets["real"] = feed
    return sets


def real_inputs(size: int, channels: int = 1, batch: int = 2) -> dict[str, np.ndarray] | None:
    """Real classifier inputs: the first ``batch`` bundled sample X-rays (``manet_edge/assets/samples``),
    segmented by the bundled default segmenter and prepared exactly as the pipeline does (real lung
    masks, post-processed). ``None`` when the samples or the segmenter are missing."""
    from manet_edge.assets import default_models_dir, samples_dir
    from manet_edge.export.quantize import segmented_inputs

    seg = default_models_dir() / "segmenter.onnx"
    images = sorted(samples_dir().glob("*.png"))[:batch] if samples_dir().is_dir() else []
    if not seg.is_file() or len(images) < batch:
        return None
    feeds = list(segmented_inputs(images, seg, size, channels))
    return {k: np.concatenate([f[k] for f in feeds]) for k in ("image", "mask")}


# ----------------------------------------------------------------------------------------------
# Runners (verification only; the product's runners live in manet_edge.runtime)
# ----------------------------------------------------------------------------------------------

def ort_session(model: onnx.ModelProto | str | Path, threads: int = 1):
    """A CPU ONNX Runtime session (:func:`manet_edge.runtime.onnxrt.session_from_onnx`)."""
    from manet_edge.runtime.onnxrt import session_from_onnx

    return session_from_onnx(model, threads=threads)


def run_ort(model: onnx.ModelProto | str | Path, feed: dict[str, np.ndarray], threads: int = 1) -> np.ndarray:
    sess = ort_session(model, threads)
    names = {i.name for i in sess.get_inputs()}
    return sess.run(["logits"], {k: v for k, v in feed.items() if k in names})[0]


def openvino_extensions() -> list[Any]:
    """OpenVINO frontend conversions for the manet_edge ops (the runtime's, see
    :func:`manet_edge.runtime.openvino.conversion_extensions`)."""
    from manet_edge.runtime.openvino import conversion_extensions

    return conversion_extensions()


def openvino_compile(model: onnx.ModelProto | str | Path, threads: int | None = None, hint: str = "LATENCY"):
    """Compile for the CPU in f32 (``INFERENCE_PRECISION_HINT`` set explicitly), as the OpenVINO
    runner reads and compiles models (:func:`manet_edge.runtime.openvino.compile_model`)."""
    from manet_edge.runtime.openvino import compile_config, compile_model

    return compile_model(model, compile_config("fp32", hint=hint, threads=threads or None))


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
    """Compare an exported (fp32) model with its torch source, its inlined twin and optionally OpenVINO,
    on random inputs, lung-like blob masks and (classifiers) real segmented X-rays."""
    from manet_edge.rewrite.functions import count_ma_nodes, inline_ma

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
