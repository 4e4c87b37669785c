"""Graceful stops: SIGINT (Ctrl-C) and SIGTERM (``docker stop``, systemd, Kubernetes) set an event.

A long command runs inside :class:`StopOnSignals`; its loops look at :attr:`StopOnSignals.event`
between units of work. Nothing is raised asynchronously, so a signal never lands inside a model
call, a thread join or a half-written file: the work under way finishes, nothing new starts, the
command cleans up and exits ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Callable

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


def exit_code_for(signum: int) -> int:
    """The shell's convention for a process ended by ``signum``: 128 + its number."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopEvent(threading.Event):
    """A :class:`threading.Event` that remembers which signal set it (``signum``, ``reason``)."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None

    @property
    def reason(self) -> str:
        return signal_name(self.signum) if self.signum is not None else "interrupt"

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.set()


class StopOnSignals:
    """Context manager: while inside, SIGINT/SIGTERM set :attr:`event` instead of stopping the process.

    The first signal prints ``message`` (if given) to stderr; later ones print that the stop is
    under way. Outside the main thread (signal handlers can only be set there) it only provides
    the event. The previous handlers are restored on exit.
    """

    def __init__(self, message: str | Callable[[int], str] | None = None):
        self.event = StopEvent()
        self._message = message
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        first = not self.event.is_set()
        self.event.request(signum)
        try:
            if first and self._message:
                text = self._message(signum) if callable(self._message) else self._message
                sys.stderr.write(text + "\n")
            elif not first:
                sys.stderr.write(f"{signal_name(signum)}: already stopping; waiting for the work under way to end\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: the stop still happens
            pass

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        if _pending.signum is not None:  # came while the command line only remembered signals
            self.event.request(_pending.signum)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._previous.clear()


# -- the command line's handlers, outside a StopOnSignals block ----------------------------------
class Interrupted(KeyboardInterrupt):
    """A :class:`KeyboardInterrupt` that says which signal raised it (SIGINT or SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__(signal_name(self.signum))


_pending = StopEvent()
"""Set by a signal that came while no command was running (start-up, option parsing)."""
_managed = False
"""True once :func:`manage_signals` ran: only then do the functions below touch the handlers (so
importing the command line in another program, or a test, changes nothing)."""


def _record(signum: int, frame: FrameType | None) -> None:
    _pending.request(signum)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _install(handler: Callable[[int, FrameType | None], None]) -> None:
    if _managed and threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, handler)


def manage_signals() -> None:
    """Called first thing by the command line: from now on a SIGINT or SIGTERM is never a traceback
    nor an instant, silent death.

    Until a command starts, a signal is only remembered (:func:`pending_signal`), and the command
    then ends at once with ``128 + signal number``. While a command runs
    (:func:`command_started`), both signals raise :class:`Interrupted`, which the command line
    reports in one line with that exit code; commands with work that must not be cut short
    (``infer``) replace that with :class:`StopOnSignals` for their run.
    """
    global _managed
    _managed = True
    _install(_record)


def pending_signal() -> int | None:
    """The first signal that came before the command started (see :func:`manage_signals`), or None."""
    return _pending.signum


def command_started() -> None:
    """A command's body begins: SIGINT/SIGTERM raise :class:`Interrupted` (no-op unless managed)."""
    _install(_raise_interrupted)


def command_ended() -> None:
    """A command's body ended: signals are remembered again, not raised (no-op unless managed)."""
    _install(_record)


def exit_process(code: int | str | None) -> "NoReturn":  # noqa: F821 - typing only
    """End the command-line process with ``code`` and no unprotected window for a signal.

    A normal interpreter exit resets SIGINT/SIGTERM to the operating system's default (the process
    dies, exit -2/-15, no message) and only *then* tears down modules and native sessions, which
    for ONNX Runtime/OpenVINO takes a few tenths of a second. A signal landing there turned a
    finished run into a silent kill. Here the exit handlers (:mod:`atexit`, which includes
    :func:`logging.shutdown`) run while this module's handlers still only record signals, the
    standard streams are flushed, and the process ends at once with :func:`os._exit`. All results
    are already on disk (written through temporary files and renamed) before this is called.
    """
    import atexit
    import os

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the interpreter prints it and exits 1
        try:
            sys.stderr.write(f"{code}\n")
        except (OSError, ValueError):
            pass
        status = 1
    try:
        atexit._run_exitfuncs()
    except BaseException:  # an exit handler failing must not leave the process running
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed pipe (``| head``): nothing more can be said
            status = status or 1
    os._exit(status & 0xFF if status >= 0 else 1)
