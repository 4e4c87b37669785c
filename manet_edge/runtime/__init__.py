"""Inference backends behind one :class:`Runner` interface (name -> numpy in, name -> numpy out).

Importing this package loads numpy only. Pick a backend with :func:`create_runner`; its module
(``onnxrt``, ``openvino``, ``torch``, ``tensorrt``) is imported then, and its library when the
runner is activated. :data:`BACKENDS` is the capability table (artifact suffix, precisions,
devices, pip extra) the CLI and the docs are built from.
"""

from manet_edge.runtime.base import (
    BACKENDS,
    PRECISIONS,
    BackendInfo,
    Runner,
    backend_info,
    create_runner,
    normalise_precision,
)

__all__ = ["BACKENDS", "PRECISIONS", "BackendInfo", "Runner", "backend_info", "create_runner", "normalise_precision"]
