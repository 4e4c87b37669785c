"""Fixtures for the TensorRT-engine tests: tiny ONNX models, a fake ``tensorrt`` and a fake CUDA.

Everything here runs on a CPU-only machine. The fakes record what our code asks of TensorRT and
CUDA; the tests assert our behaviour (flags chosen, shapes set, files written, bytes copied), not
the fakes'.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _ensure_export_package() -> None:
    """Make ``manet_edge.export`` importable even before ``export/__init__.py`` exists.

    pyproject maps ``export/`` to ``manet_edge.export``; an editable install without the package's
    ``__init__.py`` cannot resolve it, so register it as a namespace package pointing at ``export/``.
    Does nothing once the real package imports.
    """
    try:
        importlib.import_module("manet_edge.export")
        return
    except ModuleNotFoundError:
        pass
    import manet_edge

    spec = importlib.machinery.ModuleSpec("manet_edge.export", None, is_package=True)
    spec.submodule_search_locations = [str(REPO / "export")]
    module = importlib.util.module_from_spec(spec)
    sys.modules["manet_edge.export"] = module
    manet_edge.export = module  # type: ignore[attr-defined]


_ensure_export_package()


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` fail even on a machine that has it."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
