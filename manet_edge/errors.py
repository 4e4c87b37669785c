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


class OutputLockedError(ManetEdgeError):
    """Another run holds the output folder's lock (two runs into one --out would race)."""


class RunInterrupted(ManetEdgeError):
    """A run was stopped on request (a signal) before every file was done.

    ``results`` holds the rows that were finished, by input index; ``signal_name`` says why.
    """

    def __init__(self, results: dict | None = None, signal_name: str = "interrupt", signum: int | None = None):
        self.results = dict(results or {})
        self.signal_name = signal_name
        self.signum = signum
        super().__init__(f"run interrupted ({signal_name}) after {len(self.results)} file(s)")


# -- one mapping from errors to exit codes, used by every command -----------------------------
EXIT_OK = 0
EXIT_FAILED = 1
"""Some of the work failed (e.g. ``infer``: a file has status=error); the rest is valid."""
EXIT_USAGE = 2
"""Nothing was done: a bad option, a missing file or extra, unusable models or outputs."""
EXIT_INTERNAL = 3
"""A bug: the traceback is printed."""

EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "train", "torchvision": "train", "segmentation_models_pytorch": "train", "onnxscript": "train",
    "pytorch_grad_cam": "train", "matplotlib": "train", "timm": "train",
    "openvino": "openvino", "tensorrt": "trt", "cuda": "trt", "pycuda": "trt",
}
"""Top-level module -> the pip extra of manet-edge that installs it."""


def missing_extra(exc: BaseException) -> BackendUnavailableError | None:
    """The :class:`BackendUnavailableError` for an ``ImportError`` of an optional library, else None."""
    if isinstance(exc, BackendUnavailableError):
        return exc
    if not isinstance(exc, ImportError):
        return None
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if not name:  # "cannot import name X from Y" style: look for a known module in the message
        name = next((m for m in EXTRA_OF_MODULE if f"'{m}" in str(exc)), "")
    extra = EXTRA_OF_MODULE.get(name)
    if extra is None:
        return None
    return BackendUnavailableError(name, extra, f"{name} is not installed")


def exit_code(exc: BaseException) -> int:
    """The exit code of a command that ended with ``exc`` (see README, Troubleshooting)."""
    if isinstance(exc, RunInterrupted):
        return 128 + int(getattr(exc, "signum", None) or 2)
    if isinstance(exc, KeyboardInterrupt):  # manet_edge.signals.Interrupted says which signal
        return 128 + int(getattr(exc, "signum", None) or 2)
    if isinstance(exc, ManetEdgeError) or missing_extra(exc) is not None:
        return EXIT_USAGE
    return EXIT_INTERNAL


def report(exc: BaseException, command: str = "") -> int:
    """Print the one-line message of ``exc`` (a traceback only for a bug) to stderr; return its exit code."""
    import sys

    code = exit_code(exc)
    where = f"manet-edge {command}: " if command else ""
    extra = missing_extra(exc)
    if isinstance(exc, BackendUnavailableError):  # its message names the pip extra (and any detail)
        msg = f"error: {where}{exc}"
    elif extra is not None:
        msg = f"error: {where}needs the '{extra.extra}' extra ({extra.backend} is not installed): " \
              f"pip install 'manet-edge[{extra.extra}]'"
    elif isinstance(exc, RunInterrupted):
        msg = f"interrupted: {where}{exc}"
    elif isinstance(exc, KeyboardInterrupt):
        from manet_edge.signals import signal_name

        msg = f"interrupted: {where}stopped by {signal_name(code - 128)}"
    elif isinstance(exc, ManetEdgeError):
        msg = f"error: {exc}"
    else:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        msg = (f"internal error: {type(exc).__name__}: {exc} (a bug: please report it with the traceback above)")
    try:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return code
