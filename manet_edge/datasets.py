"""Torch-free readers for the two data layouts, and seeded patient-disjoint 8:1:1 splits.

Layout (that of ``shared/data``; bring your own data in the same shape)::

    ROOT/seg/images/<name>.png    X-ray
    ROOT/seg/masks/<name>.png     lung mask of the image with the same name (0 / 255)
    ROOT/cls/<class>/<name>.png   class in {normal, covid, tb, bacterial, viral}
    ROOT/manifest.csv             optional: path,label,patient_id,... (paths relative to ROOT)

Any format :func:`manet_edge.io.load_image` reads is accepted. ``<name>`` may start with a source
tag (``ieee_``, ``quex_``, ``shenzhen_``, ``kermany_``; version 2 of the development data adds
``cxrdb_``, ``tbx11k_``, ``montgomery_``), used to report metrics per source and to hold sources
out (:func:`parse_source_spec`).
Without a manifest every image is its own patient.

Splits are made once, saved as JSON and reused by every later stage: train/val/test lists of
paths relative to ROOT. Images of one patient always land in one split (a patient with images in
two classes too), and each class is split 8:1:1 on its own (stratified by the patient's first
label). :func:`make_joint_splits` (splits v2, ``splits/*.json``) makes the cls and seg splits in one
pass, so a patient's films share one split across both tasks; version-1 split files
(``splits/v1/``) stay readable by :func:`load_splits`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from manet_edge import CLASSES
from manet_edge.errors import BadInputError, ManetEdgeError
from manet_edge.fileutil import atomic_write_text
from manet_edge.io import SUPPORTED_SUFFIXES

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    """One image (and, for segmentation, its mask). Paths are relative to the data root."""

    path: str
    label: str
    mask: str | None = None
    patient_id: str = ""
    source: str = ""


def _source_of(name: str) -> str:
    return name.split("_", 1)[0] if "_" in name else "unknown"


def read_manifest(root: Path) -> dict[str, dict[str, str]]:
    """``manifest.csv`` rows keyed by path, or {} when there is none."""
    path = root / "manifest.csv"
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise BadInputError("manifest.csv needs a 'path' column", path)
        return {row["path"]: row for row in reader}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


def find_seg_pairs(root: str | Path) -> list[Item]:
    """Image/mask pairs under ``ROOT/seg/{images,masks}`` (or ``ROOT/{images,masks}``)."""
    root = Path(root)
    base = root / "seg" if (root / "seg" / "images").is_dir() else root
    images, masks = base / "images", base / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise BadInputError("expected folders seg/images and seg/masks (or images and masks)", root)
    manifest = read_manifest(root)
    by_stem = {p.stem: p for p in _images_in(masks)}
    items, missing = [], []
    for img in _images_in(images):
        mask = by_stem.get(img.stem)
        if mask is None:
            missing.append(img.name)
            continue
        rel = img.relative_to(root).as_posix()
        row = manifest.get(rel, {})
        items.append(Item(
            path=rel,
            mask=mask.relative_to(root).as_posix(),
            label=row.get("label", "") or "unknown",
            patient_id=row.get("patient_id", "") or "",
            source=_source_of(img.name),
        ))
    if missing:
        raise BadInputError(f"{len(missing)} image(s) have no mask of the same name, e.g. {missing[:3]}", masks)
    if not items:
        raise BadInputError("no image/mask pairs found", base)
    return items


def find_cls_items(root: str | Path, classes: tuple[str, ...] = CLASSES) -> list[Item]:
    """Images under ``ROOT/cls/<class>/`` (or ``ROOT/<class>/``), for the given classes."""
    root = Path(root)
    base = root / "cls" if (root / "cls").is_dir() else root
    manifest = read_manifest(root)
    items = []
    found = [c for c in classes if (base / c).is_dir()]
    if not found:
        raise BadInputError(f"no class folders found; expected sub-folders named {list(classes)}", base)
    for label in found:
        for img in _images_in(base / label):
            rel = img.relative_to(root).as_posix()
            row = manifest.get(rel, {})
            items.append(Item(path=rel, label=label, patient_id=row.get("patient_id", "") or "", source=_source_of(img.name)))
    if not items:
        raise BadInputError("no images found in the class folders", base)
    return items


def make_splits(items: list[Item], seed: int = 0, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, list[str]]:
    """Seeded, patient-disjoint, per-class 8:1:1 split; returns {split: [paths]}."""
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise ManetEdgeError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[it.patient_id or f"path:{it.path}"].append(it)
    by_label: dict[str, list[str]] = defaultdict(list)
    for gid in sorted(groups):
        by_label[groups[gid][0].label].append(gid)
    rng = random.Random(seed)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for label in sorted(by_label):
        gids = by_label[label]
        rng.shuffle(gids)
        n_img = sum(len(groups[g]) for g in gids)
        targets = [ratios[0] * n_img, (ratios[0] + ratios[1]) * n_img]
        seen = 0
        for gid in gids:
            split = "train" if seen < targets[0] else "val" if seen < targets[1] else "test"
            out[split].extend(it.path for it in groups[gid])
            seen += len(groups[gid])
    return {s: sorted(v) for s, v in out.items()}


def _group_key(it: Item) -> str:
    """Patient id, else the file name: seg images are byte copies of cls images of the same name."""
    return it.patient_id or f"name:{Path(it.path).name}"


def make_joint_splits(cls_items: list[Item], seg_items: list[Item], seed: int = 0,
                      ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                      pin_test: tuple[str, ...] = ()) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Splits v2: one seeded, patient-disjoint 8:1:1 assignment shared by both tasks.

    A patient (or, without a patient id, a file name) lands in one split for classification *and*
    segmentation, so a classifier test film is never a segmenter training film. Groups are
    stratified by (class, source) of their first classification image (seg-only groups by their
    own label and source), so every source is split 8:1:1 and can be reported on its own.
    ``pin_test``: file names whose groups go to the test split whatever the draw (the bundled
    sample X-rays, so that no default model ever trained on them). Returns ``(cls_splits, seg_splits)``.
    """
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise ManetEdgeError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
    groups: dict[str, list[Item]] = defaultdict(list)
    seg_groups: dict[str, list[Item]] = defaultdict(list)
    for it in cls_items:
        groups[_group_key(it)].append(it)
    for it in seg_items:
        seg_groups[_group_key(it)].append(it)
    strata: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for gid in sorted(set(groups) | set(seg_groups)):
        first = groups[gid][0] if gid in groups else seg_groups[gid][0]
        strata[("cls" if gid in groups else "seg", first.label, first.source)].append(gid)
    rng = random.Random(seed)
    where: dict[str, str] = {}
    pinned = {gid for gid, its in (*groups.items(), *seg_groups.items()) if any(Path(it.path).name in pin_test for it in its)}
    for key in sorted(strata):
        gids = strata[key]
        rng.shuffle(gids)
        gids = [g for g in gids if g not in pinned] + [g for g in gids if g in pinned]  # pinned ones fill the test end
        size = {g: len(groups.get(g, [])) or len(seg_groups[g]) for g in gids}
        n_img = sum(size.values())
        targets = [ratios[0] * n_img, (ratios[0] + ratios[1]) * n_img]
        seen = 0
        n_pinned = sum(size[g] for g in gids if g in pinned)
        targets = [min(targets[0], n_img - n_pinned), min(targets[1], n_img - n_pinned)]
        for gid in gids:
            where[gid] = "test" if gid in pinned else "train" if seen < targets[0] else "val" if seen < targets[1] else "test"
            seen += size[gid]
    cls_out: dict[str, list[str]] = {s: [] for s in SPLITS}
    seg_out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for gid, its in groups.items():
        cls_out[where[gid]].extend(it.path for it in its)
    for gid, its in seg_groups.items():
        seg_out[where[gid]].extend(it.path for it in its)
    return {s: sorted(v) for s, v in cls_out.items()}, {s: sorted(v) for s, v in seg_out.items()}


def save_splits(splits: dict[str, list[str]], path: str | Path, *, root: str | Path, task: str, seed: int,
                version: int = 1) -> None:
    data = {"task": task, "seed": seed, "root": str(root), "version": version, **splits,
            "sha256": hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()}
    atomic_write_text(Path(path), json.dumps(data, indent=1) + "\n")


def load_splits(path: str | Path) -> dict[str, list[str]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read split file: {exc}", path) from exc
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise BadInputError(f"split file lacks {missing}", path)
    return {s: list(data[s]) for s in SPLITS}


def get_splits(items: list[Item], path: str | Path, *, root: str | Path, task: str, seed: int = 0) -> dict[str, list[str]]:
    """Load the split file if it exists (checking it matches the data), else make and save it."""
    path = Path(path)
    known = {it.path for it in items}
    if path.exists():
        splits = load_splits(path)
        unknown = [p for s in SPLITS for p in splits[s] if p not in known]
        if unknown:
            raise BadInputError(f"split file names {len(unknown)} file(s) not in the data, e.g. {unknown[:3]}", path)
        return splits
    splits = make_splits(items, seed)
    save_splits(splits, path, root=root, task=task, seed=seed)
    return splits


def select(items: list[Item], paths: list[str]) -> list[Item]:
    by_path = {it.path: it for it in items}
    return [by_path[p] for p in paths]


def parse_source_spec(spec: str) -> list[tuple[str, str]]:
    """``"normal:cxrdb,tb:shenzhen+montgomery"`` -> [("normal", "cxrdb"), ("tb", "shenzhen"), ("tb", "montgomery")].

    ``CLASS:SOURCE`` names one source of one class; ``*:SOURCE`` a source in every class.
    """
    out: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if ":" not in part:
            raise ManetEdgeError(f"source spec {part!r}: expected CLASS:SOURCE (e.g. normal:cxrdb or *:ieee)")
        label, sources = part.split(":", 1)
        if label != "*" and label not in CLASSES:
            raise ManetEdgeError(f"source spec {part!r}: unknown class {label!r}; choose one of {list(CLASSES)} or *")
        out.extend((label, src) for src in filter(None, sources.split("+")))
    return out


def matches_source(item: Item, spec: list[tuple[str, str]]) -> bool:
    return any(src == item.source and label in ("*", item.label) for label, src in spec)
