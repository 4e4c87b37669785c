"""Named exceptions. Every message says what was wrong and, where there is one, the fix."""

from __future__ import annotations


class ManetEdgeError(Exception):
    """Base class of every error this package raises on purpose."""


class BadInputError(ManetEdgeError, ValueError):
    """An input file or argument cannot be used (unreadable, corrupt, wrong shape, ...)."""

    def __init__(self, message: str, path: object | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ModelError(ManetEdgeError):
    """A model artifact is missing, unreadable or incompatible with this pipeline."""


class BackendUnavailableError(ManetEdgeError, ImportError):
    """An optional backend library is not installed; the message names the pip extra."""

    def __init__(self, backend: str, extra: str, detail: str = ""):
        self.backend = backend
        self.extra = extra
        msg = f"backend '{backend}' is not available: install it with  pip install 'manet-edge[{extra}]'"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class OutputExistsError(ManetEdgeError, FileExistsError):
    """An output would overwrite an existing file and --overwrite was not given."""


class RunInterrupted(ManetEdgeError):
    """A run was stopped on request (a signal) before every file was done.

    ``results`` holds the rows that were finished, by input index; ``signal_name`` says why.
    """

    def __init__(self, results: dict | None = None, signal_name: str = "interrupt"):
        self.results = dict(results or {})
        self.signal_name = signal_name
        super().__init__(f"run interrupted ({signal_name}) after {len(self.results)} file(s)")
