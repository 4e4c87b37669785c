"""Every ``--help`` of the real command line reads well: each option has a sentence, defaults are
not swallowed by the renderer, no Python type leaks; ``manet-edge models`` lists the zoo."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner


def _app() -> typer.Typer:
    import cli

    return cli.app


def _command_paths() -> list[tuple[list[str], object]]:
    group = typer.main.get_command(_app())
    paths, todo = [], [([], group)]
    while todo:
        prefix, cmd = todo.pop()
        paths.append((prefix, cmd))
        if getattr(cmd, "commands", None):
            todo.extend((prefix + [n], c) for n, c in sorted(cmd.commands.items()))
    return sorted(paths, key=lambda p: p[0])


PATHS = _command_paths()


@pytest.mark.parametrize("path", [p for p, _ in PATHS], ids=lambda p: " ".join(p) or "manet-edge")
def test_help_is_complete(path):
    cmd = dict((tuple(p), c) for p, c in PATHS)[tuple(path)]
    res = CliRunner().invoke(_app(), [*path, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    text = res.output
    assert "list[" not in text and "List[" not in text and "<list" not in text, text
    assert "Optional[" not in text and "<class '" not in text and "PosixPath(" not in text, text
    for param in getattr(cmd, "params", []):
        if getattr(param, "hidden", False) or param.name == "help":
            continue
        helptext = (getattr(param, "help", None) or "").strip()
        assert helptext, f"{' '.join(path)}: {param.opts or param.name} has no help"
        assert "[default" not in helptext, f"{' '.join(path)}: {param.opts}: write the default with show_default"
    # what the renderer prints must keep every default that a help string spells out
    assert not re.search(r"\w \.\s*$", text, re.M), text


def test_models_lists_the_zoo():
    from manet_edge.models import list_models

    res = CliRunner().invoke(_app(), ["models"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for name in list_models():
        assert name in res.output
    assert "resnet50-ma" in res.output and "vgg16-cbam" in res.output
