"""Option and set-up errors of serve / listen / export --format triton: one line, exit 2, nothing started.
(No Triton needed: these run in CI.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_serve_with_missing_binary(tmp_path):
    res = cli("serve", "--tritonserver", str(tmp_path / "no-such-tritonserver"), "--http-port", "1")
    assert res.returncode == 2
    assert "no-such-tritonserver does not exist or is not executable" in res.stderr
    assert "Traceback" not in res.stderr


def test_listen_bad_forward(tmp_path):
    pytest.importorskip("pynetdicom", reason="the dicom extra is not installed")
    pytest.importorskip("highdicom", reason="the dicom extra is not installed")
    res = cli("listen", "--out", str(tmp_path / "o"), "--forward", "no-port-here")
    assert res.returncode == 2 and "--forward must be HOST:PORT" in res.stderr


def test_export_triton_needs_both_models(tmp_path):
    res = cli("export", "--format", "triton", "--out", str(tmp_path / "r"), "--seg-model", "unet")
    assert res.returncode == 2 and "needs both models" in res.stderr
    assert not (tmp_path / "r").exists()


def test_free_name_never_reuses(tmp_path):
    from manet_edge.dicom_listen import _free_name

    (tmp_path / "received").mkdir()
    assert _free_name(tmp_path, "1.2.3") == "1.2.3"
    (tmp_path / "received" / "1.2.3.dcm").write_bytes(b"x")
    assert _free_name(tmp_path, "1.2.3") == "1.2.3-2"
    (tmp_path / "1.2.3-2.SR.dcm").write_bytes(b"x")
    assert _free_name(tmp_path, "1.2.3") == "1.2.3-3"
