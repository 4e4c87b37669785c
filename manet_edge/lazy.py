"""The one way manet-edge imports an optional heavy library (torch, OpenVINO, TensorRT, ...).

Everything else is imported at module level. An optional library is imported when it is first
needed, through :func:`optional_import`, and a missing one is a
:class:`~manet_edge.errors.BackendUnavailableError` naming the pip extra that installs it
(``pip install 'manet-edge[EXTRA]'``), which every command reports as one line and exit 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from manet_edge.errors import EXTRA_OF_MODULE, BackendUnavailableError


def optional_import(module: str, extra: str | None = None, *, what: str | None = None) -> ModuleType:
    """``import module`` (a dotted name is fine); on failure a :class:`BackendUnavailableError`
    for ``what`` (default: the top-level module) naming ``extra`` (default: the extra of
    :data:`manet_edge.errors.EXTRA_OF_MODULE`)."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(what or top, extra or EXTRA_OF_MODULE.get(top, top),
                                      f"import {module} failed: {exc}") from exc
