"""Atomic writes and the no-silent-overwrite rule, shared by every command that writes files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from manet_edge.errors import OutputExistsError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import (os.umask is process-wide)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()
"""What ``open()`` would give a new file. ``mkstemp`` creates its file 0600, which would leave
results, masks and exported models unreadable to the rest of the user's group."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    An interrupt leaves either the old file or the new one, never a half-written file. The file
    gets the permissions a plain ``open()`` would give it (``0666`` less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _FILE_MODE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_can_write(paths: list[Path], overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` naming every existing path unless ``overwrite``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            "refusing to overwrite existing output: " + ", ".join(existing) + " (pass --overwrite to replace it)"
        )
