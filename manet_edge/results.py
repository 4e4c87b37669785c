"""Result files of ``manet-edge infer``: predictions CSV/JSON, mask PNGs and overlay PNGs.

``predictions.csv`` has exactly :data:`CSV_COLUMNS`; ``predictions.json`` holds the same rows
(typed: numbers, ``null``, a list of flags) plus the run metadata. Every file is written
atomically (:mod:`manet_edge.fileutil`): an interrupted run leaves the previous file or none,
never half of one. Masks go to ``<out>/masks/<relative path>.png`` (the input's suffix replaced
by ``.png``; where two inputs would share a name, e.g. ``a.jpg`` and ``a.png``, both keep their
suffix: ``a.jpg.png``, ``a.png.png``): the cleaned segmenter-size mask brought to the
input's own resolution (:func:`manet_edge.postprocess.upsample_mask`: nearest, with the outline
refined from the probability map), 0/255. Overlays (lung outline and the predicted class, on the image
scaled to at most 1024 px a side) go to ``<out>/overlays/`` under the same names.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import platform
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np

from manet_edge import CLASSES, __version__
from manet_edge.config import PostprocessConfig
from manet_edge.fileutil import atomic_write_bytes, atomic_write_text, is_escaped_name, name_max, printable_name
from manet_edge.pipeline import ImageResult, WorkItem
from manet_edge.postprocess import upsample_mask
from manet_edge.runtime.backends import library_distributions

CSV_COLUMNS: tuple[str, ...] = ("file", "status", "error", "prediction", *(f"p_{c}" for c in CLASSES),
                                "lung_fraction", "flags", "ood_score", "heat_in_lung")
PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_JSON = "predictions.json"
MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
HEATMAPS_DIR = "heatmaps"
FLAG_SEPARATOR = ";"

_COLOURS = {"ok": (0, 230, 0), "flagged": (255, 165, 0), "error": (255, 40, 40)}
_BASE_LIBRARIES = ("numpy", "pillow", "scikit-image", "pydicom", "onnx")


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""A CSV cell starting with one of these is read as a formula by spreadsheets; such text cells get
a leading apostrophe in ``predictions.csv`` (the JSON keeps the text as it is)."""
NAME_NOTE = ("file names and messages are UTF-8; a byte of a file name that is not UTF-8 is written as "
             "the four characters \\xNN (os.fsencode of the name gives the bytes back)")


def row_dict(r: ImageResult) -> dict[str, Any]:
    """The typed row of ``r`` (JSON): ``None`` where a value is missing, flags as a list.

    ``file`` and ``error`` are :func:`~manet_edge.fileutil.printable_name`: valid UTF-8 even for
    a file name that is not.
    """
    probs = r.probabilities or (None,) * len(CLASSES)
    row: dict[str, Any] = {"file": printable_name(r.file), "status": r.status, "error": printable_name(r.error),
                           "prediction": r.prediction}
    row.update({f"p_{c}": p for c, p in zip(CLASSES, probs)})
    row["lung_fraction"] = r.lung_fraction
    row["flags"] = list(r.flags)
    row["ood_score"] = r.ood_score
    row["heat_in_lung"] = r.heat_in_lung
    return row


def csv_text(results: Iterable[ImageResult]) -> str:
    """``predictions.csv`` as text: probabilities with 6 decimals, flags joined by ';'.

    Text cells that a spreadsheet would run as a formula (:data:`FORMULA_PREFIXES`) start with an
    apostrophe; names that are not UTF-8 are escaped (:data:`NAME_NOTE`).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        d = row_dict(r)
        cells = []
        for col in CSV_COLUMNS:
            v = d[col]
            if v is None:
                cells.append("")
            elif col == "flags":
                cells.append(FLAG_SEPARATOR.join(v))
            elif col.startswith("p_"):
                cells.append(f"{v:.6f}")
            elif col in ("lung_fraction", "heat_in_lung"):
                cells.append(f"{v:.4f}")
            elif col == "ood_score":
                cells.append(f"{v:.6g}")
            else:
                text = " ".join(str(v).split()) if col == "error" else str(v)
                cells.append("'" + text if text.startswith(FORMULA_PREFIXES) else text)
        writer.writerow(cells)
    return buf.getvalue()


def library_versions(backend: str | None = None) -> dict[str, str]:
    """Installed versions of the libraries a run of ``backend`` uses (all backends if ``None``).

    Read from package metadata: nothing is imported.
    """
    out = {"manet_edge": __version__, "python": platform.python_version()}
    for name in (*_BASE_LIBRARIES, *library_distributions(backend)):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def write_predictions(out: Path, results: Sequence[ImageResult], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``predictions.csv`` and ``predictions.json`` atomically; returns their paths."""
    out = Path(out)
    csv_path, json_path = out / PREDICTIONS_CSV, out / PREDICTIONS_JSON
    escaped = sum(is_escaped_name(r.file) for r in results)
    meta = {**meta, "file_names": {"escaped": escaped, "note": NAME_NOTE}}
    doc = {"meta": _printable(meta), "columns": list(CSV_COLUMNS), "rows": [row_dict(r) for r in results]}
    text = json.dumps(doc, indent=2, allow_nan=False, default=str, ensure_ascii=False) + "\n"
    atomic_write_text(csv_path, csv_text(results))
    atomic_write_text(json_path, text)
    return csv_path, json_path


def _printable(obj: Any) -> Any:
    """``obj`` with every string made :func:`printable_name` (paths in the metadata)."""
    if isinstance(obj, str):
        return printable_name(obj)
    if isinstance(obj, dict):
        return {_printable(k): _printable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_printable(v) for v in obj]
    return obj


def _fit_name(name: str, limit: int) -> str:
    """``name`` (a mask/overlay PNG name) cut to ``limit`` bytes, kept unique by a hash of the whole name."""
    import hashlib

    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    tag = "~" + hashlib.sha1(raw).hexdigest()[:12] + ".png"
    return os.fsdecode(raw[: limit - len(tag)]) + tag


def artifact_names(rels: Sequence[str], limit: int | None = None) -> dict[str, str]:
    """Input relative path -> relative PNG name for its mask/overlay, collision-free."""
    def swap(rel: str) -> str:
        return str(PurePosixPath(rel).with_suffix(".png")) if PurePosixPath(rel).suffix else rel + ".png"

    names = {rel: swap(rel) for rel in rels}
    counts = Counter(n.lower() for n in names.values())  # case-insensitive file systems too
    for rel in rels:
        if counts[names[rel].lower()] > 1:
            names[rel] = rel + ".png"
    used: set[str] = set()
    for rel in sorted(rels):  # pathological leftovers (e.g. 'a.jpg', 'a.png', 'a.jpg.png'): number them
        name, k = names[rel], 1
        while name.lower() in used:
            name, k = f"{names[rel][:-4]}.{k}.png", k + 1
        used.add(name.lower())
        names[rel] = name
    limit = limit or name_max(Path("."))
    for rel, name in names.items():  # 'a.jpg' -> 'a.jpg.png' may pass NAME_MAX: shorten that part
        parts = PurePosixPath(name).parts
        if any(len(os.fsencode(p)) > limit for p in parts):
            names[rel] = str(PurePosixPath(*parts[:-1], _fit_name(parts[-1], limit)))
    return names


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=3)  # ~3x faster than the default 6, same size
    return buf.getvalue()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def overlay_image(display: np.ndarray, mask: np.ndarray, lines: Sequence[str], state: str) -> np.ndarray:
    """RGB uint8 overlay: the grey image, the mask outline and ``lines`` of text in a corner."""
    from PIL import Image, ImageDraw
    from skimage.morphology import dilation, disk
    from skimage.segmentation import find_boundaries

    h, w = display.shape
    colour = _COLOURS[state]
    rgb = np.repeat(display[..., None], 3, axis=2)
    edge = find_boundaries(mask, mode="inner")
    thick = max(2, round(max(h, w) / 300))
    if thick > 1:
        edge = dilation(edge, disk(thick - 1))
    rgb[edge] = colour
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    font = _font(max(10, round(max(h, w) / 22)))
    y = 2
    for line in lines:
        box = draw.textbbox((4, y), line, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((4, y), line, fill=colour, font=font)
        y = box[3] + 4
    return np.asarray(im)


def overlay_lines(item: WorkItem) -> tuple[list[str], str]:
    """Text and colour state of an overlay from a finished work item."""
    r = item.result()
    flags = [f"flags: {', '.join(r.flags)}"] if r.flags else []
    if r.probabilities is not None:
        best = max(r.probabilities)
        return [f"{r.prediction} {best:.2f}", *flags], ("flagged" if r.flags else "ok")
    return [r.error or "error", *flags], "error"


class ArtifactWriter:
    """Writes the requested mask/overlay PNGs of one work item (called from pipeline workers)."""

    def __init__(self, out: Path, names: dict[str, str], *, masks: bool, overlays: bool, heatmaps: bool = False):
        self.out = Path(out)
        self.names = names
        self.masks = masks
        self.overlays = overlays
        self.heatmaps = heatmaps

    def planned_paths(self) -> list[Path]:
        """Every file this writer may create (for the no-overwrite check)."""
        paths: list[Path] = []
        for name in self.names.values():
            if self.masks:
                paths.append(self.out / MASKS_DIR / name)
            if self.overlays:
                paths.append(self.out / OVERLAYS_DIR / name)
            if self.heatmaps:
                paths.append(self.out / HEATMAPS_DIR / name)
                paths.append(self.out / HEATMAPS_DIR / heat_array_name(name))
        return paths

    def __call__(self, item: WorkItem, post: PostprocessConfig) -> None:
        name = self.names[item.src.rel]
        if self.masks:
            mask = upsample_mask(item.mask, item.prob, item.orig_shape, post.threshold)
            atomic_write_bytes(self.out / MASKS_DIR / name, _png_bytes(mask.astype(np.uint8) * 255))
        if self.overlays and item.display is not None:
            disp_mask = upsample_mask(item.mask, item.prob, item.display.shape, post.threshold)
            lines, state = overlay_lines(item)
            atomic_write_bytes(self.out / OVERLAYS_DIR / name, _png_bytes(overlay_image(item.display, disp_mask, lines, state)))
        if self.heatmaps and item.heat is not None:
            write_heatmap(self.out / HEATMAPS_DIR / name, item, post)


def heat_array_name(png_name: str) -> str:
    """``heatmaps/<name>.npy`` beside ``heatmaps/<name>.png``: the [0, 1] map at the classifier size."""
    return png_name[:-4] + ".npy" if png_name.endswith(".png") else png_name + ".npy"


def write_heatmap(png_path: Path, item: WorkItem, post: PostprocessConfig) -> None:
    """The class-activation overlay (PNG, the image at most 1024 px a side, lung outline in white)
    and the heat map itself (.npy, float32 in [0, 1] at the classifier's input size)."""
    from manet_edge.heatmap import heatmap_overlay
    from manet_edge.preprocess import resize

    heat = np.asarray(item.heat, np.float32)
    buf = io.BytesIO()
    np.save(buf, heat)
    atomic_write_bytes(png_path.with_name(heat_array_name(png_path.name)), buf.getvalue())
    if item.display is not None:
        shape = item.display.shape
        disp_mask = upsample_mask(item.mask, item.prob, shape, post.threshold) if item.prob is not None else \
            resize(item.mask.astype(np.float32), shape, nearest=True) > 0.5
        big = np.clip(resize(heat, shape), 0, 1)
        atomic_write_bytes(png_path, _png_bytes(heatmap_overlay(item.display, big, disp_mask)))
