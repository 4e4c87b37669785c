"""One Runner interface for every inference backend and a factory (the capability table is
:mod:`manet_edge.runtime.backends`).

A runner turns a dict of named numpy arrays into a dict of named numpy arrays (the Polygraphy
runner idea), so the pipeline and the parity tests never care which library runs a model.
Constructors only store their arguments; the library is imported and the model loaded in
:meth:`Runner.activate` (or on entering the ``with`` block). This module imports numpy only:
each backend module imports its library inside ``activate``.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from manet_edge.errors import BackendUnavailableError, BadInputError, ManetEdgeError, ModelError
from manet_edge.metadata import ModelCard

# The backend table lives in manet_edge.runtime.backends; re-exported here (its old home).
from manet_edge.runtime.backends import (  # noqa: E402,F401
    BACKENDS,
    PRECISION_ALIASES,
    PRECISIONS,
    BackendInfo,
    backend_info,
)


def normalise_precision(precision: str | None, backend: str | None = None) -> str | None:
    """Canonical spelling of ``precision`` (``f32`` -> ``fp32``); checked against ``backend`` if given."""
    if precision is None:
        return None
    p = PRECISION_ALIASES.get(precision.strip().lower(), precision.strip().lower())
    if p not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend is not None:
        info = backend_info(backend)
        if p not in info.precisions:
            raise BadInputError(
                f"backend '{backend}' cannot run precision {p!r}; it supports {', '.join(info.precisions)}")
    return p


class Runner(abc.ABC):
    """Runs one exported model: ``infer({name: array}) -> {name: array}``.

    Subclasses implement ``_activate`` (load; must set ``self._card``, ``self._inputs`` (name ->
    shape with ``None`` for dynamic dims), ``self._outputs`` and ``self._precision``), ``_infer`` and
    optionally ``_deactivate``.
    """

    backend: str = "base"
    concurrent: bool = False
    """True when ``infer`` may be called from several threads at once (the pipeline's streams)."""

    def __init__(self, path: Any, *, precision: str | None = None, name: str | None = None):
        # ``path`` is a model file, or (backends that can: see each runner) an in-memory model or a
        # ready session; ``source`` keeps what was given, ``path`` names it in messages.
        self.source = path
        self.in_memory = not isinstance(path, (str, Path))
        self.path = Path(path) if not self.in_memory else Path(f"<in-memory {type(path).__name__}>")
        self.requested_precision = normalise_precision(precision, self.backend if self.backend in BACKENDS else None)
        self._name = name
        self._card: ModelCard | None = None
        self._inputs: dict[str, tuple[int | None, ...]] = {}
        self._outputs: dict[str, tuple[int | None, ...]] = {}
        self._precision: str | None = None
        self.is_active = False

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        """Import the backend library and load the model (idempotent)."""
        if not self.is_active:
            if not self.in_memory and not self.path.exists():
                raise ModelError(f"{self.path}: model file does not exist")
            if not self.in_memory and self.path.is_dir():
                raise ModelError(f"{self.path}: is a directory, expected a model file")
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release the model (idempotent)."""
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- inference ---------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ``feed`` (every input by name, float32, batch first)."""
        if not self.is_active:
            raise ManetEdgeError(f"{self.name}: call activate() (or use `with runner:`) before infer()")
        missing = [n for n in self._inputs if n not in feed]
        unknown = [n for n in feed if n not in self._inputs]
        if missing or unknown:
            raise BadInputError(
                f"{self.name}: feed has inputs {sorted(feed)}, the model expects {list(self._inputs)}")
        clean: dict[str, np.ndarray] = {}
        for key, arr in feed.items():
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            shape = self._inputs[key]
            if arr.ndim != len(shape) or any(d is not None and d != a for d, a in zip(shape, arr.shape)):
                raise BadInputError(f"{self.name}: input '{key}' has shape {arr.shape}, the model expects "
                                    f"{tuple('N' if d is None else d for d in shape)}")
            clean[key] = arr
        return self._infer(clean)

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _deactivate(self) -> None:
        """Drop references; subclasses free anything else."""

    # -- properties --------------------------------------------------------------------------
    def _require_active(self, what: str) -> None:
        if not self.is_active:
            raise ManetEdgeError(f"{self.name}: {what} is known only after activate()")

    @property
    def name(self) -> str:
        return self._name or f"{self.backend}:{self.path.name}"

    @property
    def card(self) -> ModelCard:
        self._require_active("the model card")
        if self._card is None:
            raise ModelError(f"{self.name}: the backend did not provide a model card")
        return self._card

    @property
    def input_names(self) -> list[str]:
        self._require_active("input_names")
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        self._require_active("output_names")
        return list(self._outputs)

    @property
    def input_shapes(self) -> dict[str, tuple[int | None, ...]]:
        """Input name -> shape, ``None`` for a dynamic dimension."""
        self._require_active("input_shapes")
        return dict(self._inputs)

    @property
    def output_shapes(self) -> dict[str, tuple[int | None, ...]]:
        self._require_active("output_shapes")
        return dict(self._outputs)

    @property
    def precision(self) -> str:
        """The precision that actually runs (read back from the backend where it can say)."""
        self._require_active("the precision")
        return self._precision or "fp32"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for run metadata (extended by backends with device details)."""
        return {"backend": self.backend, "path": str(self.path), "precision": self.precision}

    def __repr__(self) -> str:
        state = "active" if self.is_active else "inactive"
        return f"<{type(self).__name__} {self.path} ({state})>"


def dims(shape: Any) -> tuple[int | None, ...]:
    """Backend shape (ints, strings, ``None`` or -1 for dynamic dims) -> ints and ``None``."""
    out: list[int | None] = []
    for d in shape:
        out.append(d if isinstance(d, int) and d >= 0 else None)
    return tuple(out)


def create_runner(path: str | Path, backend: str = "onnxruntime", precision: str | None = None,
                  **kwargs: Any) -> Runner:
    """Build (not activate) the runner of ``backend`` for the model file ``path``.

    The backend module is imported here, lazily; its heavy library is imported by
    :meth:`Runner.activate`. Extra keyword arguments (``threads``, ``device``, ...) go to the
    runner's constructor.
    """
    info = backend_info(backend)
    precision = normalise_precision(precision, backend)
    try:
        module = importlib.import_module(info.module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == info.module or info.module.startswith(exc.name + ".")):
            raise BackendUnavailableError(backend, info.extra, f"{info.module} is not part of this install") from exc
        raise BackendUnavailableError(backend, info.extra, f"missing module {exc.name}") from exc
    cls = getattr(module, info.class_name)
    return cls(path, precision=precision, **kwargs)

