"""Files shipped inside the package: the default exported models and a few sample X-rays.

``assets/models/segmenter.onnx`` and ``assets/models/classifier.onnx`` are what
``manet-edge infer`` runs when no ``--models`` folder is given; ``assets/samples/`` holds
redistributable chest X-rays (see its ``SOURCES.md``). Located with :mod:`importlib.resources`,
so they are found in a regular, an editable or a wheel install alike.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from manet_edge.errors import ModelError

SEGMENTER_STEM = "segmenter"
CLASSIFIER_STEM = "classifier"

_HOW_TO = {
    ".onnx": "export them with `manet-edge export` (or pass --models DIR holding segmenter.onnx and classifier.onnx)",
    ".pt": "the torch backend runs training checkpoints: pass --models DIR holding segmenter.pt and classifier.pt",
    ".engine": "build TensorRT engines with `manet-edge engine` and pass --models DIR holding "
               "segmenter.engine and classifier.engine",
}
_NOT_BUNDLED = {
    ".pt": "the torch backend runs training checkpoints, and none ship with manet-edge (it bundles ONNX models "
           "only): pass --models DIR holding segmenter.pt and classifier.pt (from `manet-edge train`)",
    ".engine": "TensorRT engines are built for one GPU and TensorRT version, so none ship with manet-edge: build "
               "them with `manet-edge engine build` and pass --models DIR holding segmenter.engine and "
               "classifier.engine",
}
_SEG_OPTIONAL = {"int8"}
"""Precisions for which only the classifier is converted (``export --precision int8``): the segmenter
falls back to its plain file, run in its own precision."""


def _package_dir() -> Path:
    return Path(str(importlib.resources.files(__name__)))


def default_models_dir() -> Path:
    """The folder of the bundled default models (it may lack the files in a source checkout)."""
    return _package_dir() / "models"


def samples_dir() -> Path:
    """The folder of the bundled sample chest X-rays."""
    return _package_dir() / "samples"


def model_paths(models_dir: Path | None, suffix: str = ".onnx", precision: str | None = None, *,
                with_precision: bool = False):
    """``(segmenter, classifier)`` paths in ``models_dir`` (default: the bundled models).

    With a ``precision`` other than fp32, ``segmenter.<precision><suffix>`` and
    ``classifier.<precision><suffix>`` (what ``manet-edge export --precision`` writes) are used
    where they exist, else the plain files (whose cards must then say that precision). For int8
    only the classifier is quantized, so the segmenter may be the plain one (run in its own
    precision). ``with_precision=True`` returns ``((seg, seg_precision), (cls, cls_precision))``,
    the precision to request from each runner (``None``: the file's own). Raises
    :class:`ModelError` naming the missing files and how to make them.
    """
    default = models_dir is None
    folder = default_models_dir() if default else Path(models_dir)
    if not default and not folder.is_dir():
        raise ModelError(f"models folder {folder} does not exist or is not a folder")
    if default and suffix in _NOT_BUNDLED:
        raise ModelError(_NOT_BUNDLED[suffix])
    chosen = []
    for stem in (SEGMENTER_STEM, CLASSIFIER_STEM):
        plain = folder / f"{stem}{suffix}"
        tagged = folder / f"{stem}.{precision}{suffix}" if precision and precision != "fp32" else None
        if tagged is not None and tagged.is_file():
            chosen.append((tagged, precision))
        elif tagged is not None and stem == SEGMENTER_STEM and precision in _SEG_OPTIONAL:
            chosen.append((plain, None))
        else:
            chosen.append((plain, precision))
    missing = [p for p, _ in chosen if not p.is_file()]
    if missing:
        where = "the bundled default models are missing" if default else f"{folder} lacks the model files"
        names = ", ".join(str(p) for p in missing)
        fix = _HOW_TO.get(suffix, f"pass --models DIR holding segmenter{suffix} and classifier{suffix}")
        if precision and precision != "fp32":
            fix = (f"--precision {precision} looks for segmenter.{precision}{suffix} and classifier.{precision}{suffix} "
                   f"(written by `manet-edge export --precision {precision}`), then segmenter{suffix} and "
                   f"classifier{suffix}; {fix}")
        raise ModelError(f"{where} ({names}); {fix}")
    if precision and precision != "fp32" and suffix == ".onnx":
        _check_plain_precision(chosen, precision, folder, default)
    if with_precision:
        return chosen[0], chosen[1]
    return chosen[0][0], chosen[1][0]


def _check_plain_precision(chosen, precision: str, folder: Path, default: bool) -> None:
    """Raise :class:`ModelError` when ``--precision`` fell back to a plain ``.onnx`` file whose card
    says another precision (ONNX Runtime runs a model in its exported precision only)."""
    from manet_edge.metadata import read_onnx_card

    for stem, (path, wanted) in zip((SEGMENTER_STEM, CLASSIFIER_STEM), chosen):
        if wanted is None or path.name != f"{stem}.onnx":
            continue  # a tagged file, or the int8 segmenter that runs in its own precision
        have = read_onnx_card(str(path)).precision
        if have == wanted:
            continue
        where = ("the bundled models are fp32 only" if default
                 else f"{folder} has no {stem}.{wanted}.onnx and {path.name} is {have}")
        raise ModelError(
            f"--precision {wanted}: {where}; export the {wanted} models with "
            f"`manet-edge export --precision {wanted} --out DIR` (it writes {stem}.{wanted}.onnx) and pass "
            f"--models DIR, or drop --precision to run the {have} models")
