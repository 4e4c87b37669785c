"""Fixtures for the serving tests: a real ``manet-edge serve`` (tritonserver) on 127.0.0.1.

These tests need the ``serve`` extra (tritonclient) and a ``tritonserver`` binary (``pip install
--no-deps nvidia-pytriton``); without them they are skipped, and the reason says what is missing.
Every server binds 127.0.0.1 on free ports, has a start-up time limit, and is stopped by a
finalizer (SIGTERM, then SIGKILL) whatever the test did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manet_edge" / "assets" / "samples"


def need_triton():
    pytest.importorskip("tritonclient.http", reason="the serve extra is not installed (pip install "
                                                    "'manet-edge[serve]')")
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    from manet_edge.errors import ManetEdgeError
    from manet_edge.serve.tritonserver import find_tritonserver

    try:
        return find_tritonserver()
    except ManetEdgeError as exc:
        pytest.skip(f"no tritonserver binary: {exc}")


class ServeProcess:
    def __init__(self, args: list[str], log: Path):
        from manet_edge.serve.tritonserver import free_port

        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.log = log
        cmd = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--exit-timeout", "5", *args]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/models/manet_edge/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"serve not ready in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="session")
def triton_dist():
    """The tritonserver to run (skips the test when there is none, or no tritonclient)."""
    return need_triton()


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    need_triton()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = ServeProcess(["--max-batch", "4", "--queue-delay-us", "5000"], log)
    request.addfinalizer(proc.stop)
    proc.wait_ready()
    return proc
