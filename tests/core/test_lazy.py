"""optional_import: the one lazy import of an optional library, naming the pip extra on failure."""

from __future__ import annotations

import json

import pytest

from manet_edge.errors import BackendUnavailableError, exit_code
from manet_edge.lazy import optional_import


def test_an_installed_module_is_returned():
    assert optional_import("json") is json


def test_a_missing_module_names_its_extra(monkeypatch):
    import manet_edge.errors as errors

    monkeypatch.setitem(errors.EXTRA_OF_MODULE, "manet_edge_no_such_lib", "fancy")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'manet-edge\[fancy\]'") as info:
        optional_import("manet_edge_no_such_lib.sub")
    assert "manet_edge_no_such_lib" in str(info.value) and exit_code(info.value) == 2
    with pytest.raises(BackendUnavailableError, match=r"manet-edge\[trt\]"):
        optional_import("manet_edge_no_such_lib", "trt", what="tensorrt")
