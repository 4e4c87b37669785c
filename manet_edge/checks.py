"""Input checks that need no model: DICOM tags, film polarity and orientation from the lung mask.

Each check returns ``flags`` (strings for the ``flags`` column, docs/trust.md). They look only at
what the pipeline already has: the DICOM header (pydicom, read without pixels), the cleaned lung
mask at the segmenter size and the image at the classifier size. numpy, scikit-image and pydicom
only (torch-free).

* DICOM: ``dicom_modality`` (Modality other than CR, DX or DR: not a radiograph), ``dicom_body_part``
  (BodyPartExamined given and not CHEST), ``dicom_lateral`` (ViewPosition LL/RL/LATERAL and
  similar: a side view; the models were trained on frontal films).
* ``inverted_polarity``: the mediastinum (spine, heart) between the lungs is *darker* than the lung
  fields (a negative film, or MONOCHROME1 pixels without the tag): :func:`polarity_score`.
* ``rotated``: the two lungs are not side by side (their centroids lie more above each other than
  beside each other): a film turned by about 90 degrees. ``upside_down``: the lung field is clearly wider at its top than at its
  base (lungs narrow towards the apices): a film turned by about 180 degrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

RADIOGRAPH_MODALITIES = ("CR", "DX", "DR")
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "PORTABLE CHEST")
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "XTABLE")

NOT_CHEST_XRAY_FLAGS = ("dicom_modality", "dicom_body_part", "not_chest_xray")
"""Flags that say the input is not a chest X-ray at all: such a row is an error (not classified)."""

POLARITY_MIN = 0.0
"""``inverted_polarity`` when :func:`polarity_score` is below this (test-split films: 5th percentile 0.15)."""
UPSIDE_DOWN_RATIO = 1.15
"""``upside_down`` when the lung field's width near its top / width near its base is above this."""


def dicom_flags(path: str | Path) -> list[str]:
    """Flags from a DICOM file's header (read without pixel data); ``[]`` for other files or tags absent."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # the decoder reports unreadable files; these checks only add flags
        return []
    return dicom_tag_flags(getattr(ds, "Modality", None), getattr(ds, "BodyPartExamined", None),
                           getattr(ds, "ViewPosition", None))


def _norm(value) -> str:
    return " ".join(str(value or "").upper().replace("_", " ").split())


def dicom_tag_flags(modality, body_part, view_position) -> list[str]:
    """The DICOM flags for these tag values (``None``/empty: the tag is absent and says nothing)."""
    flags = []
    m, b, v = _norm(modality), _norm(body_part), _norm(view_position)
    if m and m not in RADIOGRAPH_MODALITIES:
        flags.append("dicom_modality")
    if b and b not in CHEST_BODY_PARTS:
        flags.append("dicom_body_part")
    if v and (v in LATERAL_VIEWS or v.startswith("LAT")):
        flags.append("dicom_lateral")
    return flags


def polarity_score(image: np.ndarray) -> float:
    """(median of the central strip - median of the two lateral strips) / (p95 - p5 of the image).

    On a frontal film the spine and heart in the middle are bright and the lung fields on either
    side dark: positive (test split: 174 of 176 films, 5th percentile 0.15); a negative film
    gives the opposite sign (174 of 176 below 0). The strips are fixed (rows 12-88 %, the
    middle eighth of the width against 19-38 % and 62-81 %), not placed by the lung mask: on a
    negative film the segmenter finds the dark regions, which are not the lungs.
    """
    h, w = image.shape
    rows = slice(int(0.12 * h), max(int(0.12 * h) + 1, int(0.88 * h)))
    centre = image[rows, int(0.4375 * w):max(int(0.4375 * w) + 1, int(0.5625 * w))]
    lungs = np.concatenate([image[rows, int(0.19 * w):int(0.38 * w)].ravel(),
                            image[rows, int(0.62 * w):int(0.81 * w)].ravel()])
    lo, hi = np.percentile(image, (5, 95))
    spread = float(hi - lo) or 1.0
    return float((np.median(centre) - np.median(lungs)) / spread)


def lung_geometry(mask: np.ndarray) -> dict[str, float] | None:
    """Shape measures of a cleaned lung mask: aspect (bbox width / height of the lung field),
    top/base width ratio (rows at 20 % and 80 % of its height), and, with two components, how far
    apart the centroids are across (dx) and down (dy), in pixels. ``None`` without lung."""
    from skimage.measure import label, regionprops

    m = mask > 0
    if m.sum() < 16:
        return None
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    height, width = float(y1 - y0 + 1), float(x1 - x0 + 1)

    def row_width(frac: float) -> float:
        lo = int(y0 + frac * height - 0.05 * height)
        hi = int(y0 + frac * height + 0.05 * height) + 1
        cols = np.nonzero(m[max(lo, 0):hi].any(axis=0))[0]
        return float(cols.max() - cols.min() + 1) if cols.size else 0.0

    base = row_width(0.8)
    out = {"aspect": width / height, "top_base": row_width(0.2) / base if base > 0 else float("inf"),
           "components": 0.0, "dx": 0.0, "dy": 0.0}
    regions = sorted(regionprops(label(m)), key=lambda r: r.area, reverse=True)[:2]
    out["components"] = float(len(regions))
    if len(regions) == 2:
        (ya, xa), (yb, xb) = regions[0].centroid, regions[1].centroid
        out["dx"], out["dy"] = abs(xa - xb), abs(ya - yb)
    return out


def geometry_flags(mask: np.ndarray) -> list[str]:
    """``rotated`` / ``upside_down`` from :func:`lung_geometry` (thresholds above; see docs/trust.md)."""
    g = lung_geometry(mask)
    if g is None:
        return []
    if g["components"] == 2 and g["dy"] > g["dx"]:
        return ["rotated"]
    if g["top_base"] > UPSIDE_DOWN_RATIO:
        return ["upside_down"]
    return []


def photometric_flags(image: np.ndarray, mask: np.ndarray) -> list[str]:
    """``inverted_polarity`` (see :func:`polarity_score`) and the geometry flags for one image and
    its cleaned mask (any sizes)."""
    flags = []
    if polarity_score(image) < POLARITY_MIN:
        flags.append("inverted_polarity")
    return flags + geometry_flags(mask)


def merge(flags: list[str], new: Iterable[str]) -> list[str]:
    """``flags`` with ``new`` appended, without duplicates, in order."""
    out = list(flags)
    for f in new:
        if f not in out:
            out.append(f)
    return out
