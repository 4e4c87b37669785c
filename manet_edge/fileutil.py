"""Atomic writes, output locks, bytes-safe names and the no-silent-overwrite rule, shared by every
command that writes files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from manet_edge.errors import OutputExistsError, OutputLockedError

NAME_MAX = 255
"""Longest file name (bytes) assumed when the file system does not say (ext4, XFS, btrfs, APFS)."""
_TMP_EXTRA = len(".") + len(".") + 8 + len(".tmp")
"""What :func:`atomic_write_bytes` adds to a name: '.NAME.' + mkstemp's 8 random characters + '.tmp'."""


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import (os.umask is process-wide)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()
"""What ``open()`` would give a new file. ``mkstemp`` creates its file 0600, which would leave
results, masks and exported models unreadable to the rest of the user's group."""


def name_max(folder: Path) -> int:
    """The longest file name (in bytes) ``folder``'s file system allows."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return NAME_MAX


def temp_prefix(path: Path) -> str:
    """The ``mkstemp`` prefix for an atomic write of ``path``: '.NAME.', with NAME cut (in bytes)
    so that the temporary name stays within NAME_MAX even when ``path``'s own name is at the limit."""
    raw = os.fsencode(path.name)
    budget = max(1, name_max(path.parent) - _TMP_EXTRA)
    return "." + os.fsdecode(raw[:budget]) + "."


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    An interrupt leaves either the old file or the new one, never a half-written file. The file
    gets the permissions a plain ``open()`` would give it (``0666`` less the umask). The temporary
    name ('.NAME.XXXXXXXX.tmp') is cut to fit NAME_MAX, so any legal ``path`` can be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
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
    """Text variant of :func:`atomic_write_bytes` (UTF-8; see :func:`printable_name` for text
    that holds file names which are not valid UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def printable_name(text: str) -> str:
    """``text`` (a path, or a message holding one) as valid UTF-8 text.

    On Linux a file name is any bytes; Python hands bytes that are not UTF-8 over as lone
    surrogates (``surrogateescape``), which cannot be written as UTF-8. Each such byte becomes
    the four characters ``\\xNN`` (``os.fsencode`` gives the bytes back); valid names are unchanged.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_escaped_name(text: str) -> bool:
    """True when :func:`printable_name` changes ``text``."""
    return printable_name(text) != text


class OutputLock:
    """An exclusive lock on an output folder (``<folder>/.manet-edge.lock``), held for one run.

    A second run into the same folder is refused at once (:class:`OutputLockedError`) instead of
    racing the first one. The lock is the kernel's ``flock``: it goes away with the process, so a
    killed run never leaves a stale lock behind. The lock file is removed on release. Where
    ``fcntl`` does not exist (Windows) the lock is a no-op.
    """

    NAME = ".manet-edge.lock"

    def __init__(self, folder: Path):
        self.path = Path(folder) / self.NAME
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = ""
                try:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                except OSError:
                    pass
                os.close(fd)
                who = f" (process {holder})" if holder else ""
                raise OutputLockedError(
                    f"another manet-edge run is writing to {self.path.parent}{who}; wait for it to finish "
                    f"or choose another --out") from None
            try:  # the holder before us may have removed the file after we opened it: lock the live one
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()



def check_can_write(paths: list[Path], overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` naming every existing path unless ``overwrite``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            "refusing to overwrite existing output: " + ", ".join(existing) + " (pass --overwrite to replace it)"
        )
