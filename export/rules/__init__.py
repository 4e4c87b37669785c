"""Old home of the graph rewrites: they live in :mod:`manet_edge.rewrite` (torch-free, imported by
both the exporter and the runtime). ``manet_edge.export.rules`` and its sub-modules
(``.base``, ``.functions``, ``.fuse_mask_mul``, ...) are the same module objects, kept so existing
imports work."""

from __future__ import annotations

import importlib
import sys

from manet_edge import rewrite as _rewrite
from manet_edge.rewrite import *  # noqa: F401,F403
from manet_edge.rewrite import __all__  # noqa: F401

for _name in ("analysis", "base", "cse_mask_branch", "factor_mask_mul", "functions", "fuse_mask_mul",
              "hoist_mask_branch", "relu_before_mask_mul", "separable_mask_pool", "openvino_pools"):
    _module = importlib.import_module(f"manet_edge.rewrite.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module, _rewrite
