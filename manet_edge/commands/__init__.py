"""CLI command groups. Each module exposes ``register(app)`` and imports no heavy library at import time.

:func:`guard_app` wraps every command of an app so that all of them end the same way
(:func:`manet_edge.errors.report`): a missing optional library is one line naming
``pip install 'manet-edge[EXTRA]'`` and exit 2, a named error is one line and exit 2, an
interrupt is exit 130 (SIGINT) or 143 (SIGTERM), and only a bug prints a traceback (exit 3).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer

_GUARDED = "__manet_edge_guarded__"


def _readable_list_types() -> None:
    """Help shows a variadic parameter as ``<path>...``, not typer's Python type ``<list[Path]>``.

    typer (0.2x) labels each parameter with its annotation; for ``List[X]`` that is the Python
    spelling. The label is rewritten here once for every app that registers these commands; other
    labels (``<int>``, ``<dir>``, choices) are unchanged.
    """
    import re

    core = getattr(typer, "core", None)
    for name in ("TyperArgument", "TyperOption"):
        cls = getattr(core, name, None)
        original = getattr(cls, "display_type", None)
        if original is None or getattr(original, _GUARDED, False):
            continue

        def display_type(self: Any, ctx: Any, _original: Callable[..., str] = original) -> str:
            label = _original(self, ctx)
            match = re.fullmatch(r"<list\[(.+)\]>", label or "")
            return f"<{match.group(1).lower()}>..." if match else label

        setattr(display_type, _GUARDED, True)
        cls.display_type = display_type


_readable_list_types()


def choices_enum(name: str, names: Any) -> Any:
    """A ``str`` Enum of ``names`` (a library tuple or table, such as
    :func:`manet_edge.runtime.backends.backend_names`) for a typer option's choices, so the CLI never
    copies a list that can fall out of step with the library. A command module that builds one in
    ``register`` picks up rows added to the table before the app is built."""
    import enum

    return enum.Enum(name, {n: n for n in names}, type=str)


@functools.lru_cache(maxsize=1)
def _passthrough() -> tuple[type[BaseException], ...]:
    """typer's (and click's, where installed) exits and usage errors: they already end the command."""
    kinds: list[type[BaseException]] = [typer.Exit, typer.Abort, typer.exceptions.TyperException]
    try:
        import click

        kinds += [click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort]
    except ImportError:
        pass
    return tuple(kinds)


def guard(callback: Callable[..., Any], command: str) -> Callable[..., Any]:
    """``callback`` with its exceptions turned into :func:`~manet_edge.errors.report` and an exit code.

    typer/click's own exits and usage errors (``typer.Exit``, ``typer.BadParameter``, ...) pass
    through unchanged. The wrapper keeps ``callback``'s signature, so typer sees the same options.
    """
    if getattr(callback, _GUARDED, False):
        return callback

    @functools.wraps(callback)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        from manet_edge import signals
        from manet_edge.errors import report

        early = signals.pending_signal()
        if early is not None:  # a signal during start-up: stop before doing anything
            raise typer.Exit(report(signals.Interrupted(early), command))
        signals.command_started()
        try:
            return callback(*args, **kwargs)
        except _passthrough():
            raise
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(report(exc, command)) from None
        finally:
            signals.command_ended()

    setattr(guarded, _GUARDED, True)
    return guarded


def guard_app(app: typer.Typer, prefix: str = "") -> typer.Typer:
    """Apply :func:`guard` to every command of ``app`` and of its sub-groups (in place); returns ``app``."""
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        if info.callback is not None:
            info.callback = guard(info.callback, f"{prefix}{name}".strip())
    for group in app.registered_groups:
        sub = group.typer_instance
        name = group.name or (sub.info.name if sub is not None else "") or ""
        if sub is not None:
            guard_app(sub, f"{prefix}{name} ")
    return app
