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


def _package_dir() -> Path:
    return Path(str(importlib.resources.files(__name__)))


def default_models_dir() -> Path:
    """The folder of the bundled default models (it may lack the files in a source checkout)."""
    return _package_dir() / "models"


def samples_dir() -> Path:
    """The folder of the bundled sample chest X-rays."""
    return _package_dir() / "samples"


def model_paths(models_dir: Path | None, suffix: str = ".onnx") -> tuple[Path, Path]:
    """``(segmenter, classifier)`` paths in ``models_dir`` (default: the bundled models).

    Raises :class:`ModelError` naming the missing files and how to make them.
    """
    default = models_dir is None
    folder = default_models_dir() if default else Path(models_dir)
    if not default and not folder.is_dir():
        raise ModelError(f"models folder {folder} does not exist or is not a folder")
    seg = folder / f"{SEGMENTER_STEM}{suffix}"
    cls = folder / f"{CLASSIFIER_STEM}{suffix}"
    missing = [p for p in (seg, cls) if not p.is_file()]
    if missing:
        where = "the bundled default models are missing" if default else f"{folder} lacks the model files"
        names = ", ".join(str(p) for p in missing)
        fix = _HOW_TO.get(suffix, f"pass --models DIR holding segmenter{suffix} and classifier{suffix}")
        raise ModelError(f"{where} ({names}); {fix}")
    return seg, cls
