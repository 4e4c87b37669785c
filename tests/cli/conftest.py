"""Shared fixtures of the CLI tests."""

from __future__ import annotations

import pytest
import typer

from manet_edge.commands import infer as infer_cmd


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """A typer app holding only ``infer`` (a test root keeps it a sub-command)."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root (keeps `infer` a sub-command)."""

    infer_cmd.register(app)
    return app
