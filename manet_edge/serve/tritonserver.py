"""Finding and running NVIDIA Triton Inference Server's ``tritonserver`` binary.

Where the binary comes from (:func:`find_tritonserver`, first found wins): ``--tritonserver PATH``;
``$MANET_EDGE_TRITONSERVER``; the ``nvidia-pytriton`` wheel's bundled server (``pytriton/
tritonserver/bin/tritonserver`` with its Python backend and one backend stub per Python version;
only its files are used, PyTriton's Python code is never imported, so its ``numpy<2`` pin does not
apply: install it with ``pip install --no-deps nvidia-pytriton``); ``tritonserver`` on ``PATH``
(NGC containers: ``/opt/tritonserver``).

For the wheel's server, :class:`TritonServer` lays out a backend folder (links to the Python
backend, and the stub for this interpreter's version, as PyTriton itself does), and puts this
interpreter's ``libpython`` folder first on ``LD_LIBRARY_PATH`` (the stub links ``libpython3.X``
and would otherwise pick up the system's copy, whose version may not match this interpreter's
standard library) and this interpreter's ``sys.path`` on ``PYTHONPATH``, so the model runs with
the packages of the environment that started it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from manet_edge.errors import BackendUnavailableError, ManetEdgeError

INSTALL_HINT = ("pip install 'manet-edge[serve]' && pip install --no-deps nvidia-pytriton "
                "(or run inside an NGC tritonserver container, or pass --tritonserver PATH)")


@dataclass(frozen=True)
class ServerDist:
    """A ``tritonserver`` binary and the backends it can use."""

    binary: Path
    backends: Path | None = None
    """Folder with ``python/`` (and other backends); None: the binary's default (/opt/tritonserver/backends)."""
    stubs: Path | None = None
    """PyTriton's ``python_backend_stubs/<X.Y>/`` folders (the wheel only)."""
    libs: Path | None = None


def _pytriton_dist() -> ServerDist | None:
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    binary = root / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    libs = root.parent / "nvidia_pytriton.libs"
    return ServerDist(binary, root / "tritonserver" / "backends", root / "tritonserver" / "python_backend_stubs",
                      libs if libs.is_dir() else None)


def find_tritonserver(explicit: str | Path | None = None) -> ServerDist:
    """The server to run (see the module docstring); :class:`BackendUnavailableError` if none."""
    for candidate in (explicit, os.environ.get("MANET_EDGE_TRITONSERVER")):
        if candidate:
            path = Path(candidate)
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise ManetEdgeError(f"tritonserver binary {path} does not exist or is not executable")
            return ServerDist(path)
    dist = _pytriton_dist()
    if dist is not None:
        return dist
    found = shutil.which("tritonserver")
    if found:
        return ServerDist(Path(found))
    raise BackendUnavailableError("triton", "serve", f"no tritonserver binary found; {INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class TritonServer:
    """One ``tritonserver`` process over ``repository`` (start with :meth:`start`, stop with :meth:`stop`)."""

    repository: Path
    dist: ServerDist
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout_s: int = 10
    log_verbose: int = 0
    extra_args: Sequence[str] = ()
    log_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, init=False)
    _workdir: Path | None = field(default=None, init=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def _backend_dir(self) -> Path | None:
        d = self.dist
        if d.backends is None:
            return None
        if d.stubs is None:
            return d.backends
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = d.stubs / version / "triton_python_backend_stub"
        if not stub.is_file():
            have = sorted(p.name for p in d.stubs.iterdir()) if d.stubs.is_dir() else []
            raise ManetEdgeError(f"the bundled Triton has no Python backend stub for Python {version} "
                                 f"(it has {have}); use one of those Python versions or an NGC container")
        self._workdir = Path(tempfile.mkdtemp(prefix="manet-edge-triton-"))
        python = self._workdir / "backends" / "python"
        python.mkdir(parents=True)
        for item in (d.backends / "python").iterdir():
            if item.name != "triton_python_backend_stub":
                os.symlink(item, python / item.name)
        os.symlink(stub, python / "triton_python_backend_stub")
        return self._workdir / "backends"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libdirs = []
        libdir = sysconfig.get_config_var("LIBDIR")
        ldlib = sysconfig.get_config_var("LDLIBRARY")
        if libdir and ldlib and (Path(libdir) / ldlib).exists():
            libdirs.append(libdir)
        if self.dist.libs is not None:
            libdirs.append(str(self.dist.libs))
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        if libdirs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libdirs)
        package_root = str(Path(__file__).resolve().parents[2])
        paths = [package_root] + [p for p in sys.path if p and Path(p).is_dir()]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.setdefault("OMP_NUM_THREADS", "1")  # the runners set their own thread counts
        return env

    def command(self) -> list[str]:
        cmd = [str(self.dist.binary), f"--model-repository={self.repository}",
               f"--http-address={self.host}", f"--http-port={self.http_port}",
               f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
               f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}", "--allow-metrics=true",
               f"--exit-timeout-secs={self.exit_timeout_s}", f"--log-verbose={self.log_verbose}",
               "--strict-readiness=true"]
        backends = self._backend_dir()
        if backends is not None:
            cmd.append(f"--backend-directory={backends}")
        return cmd + list(self.extra_args)

    def start(self) -> "TritonServer":
        cmd = self.command()
        out = open(self.log_path, "ab") if self.log_path else None
        try:
            self.process = subprocess.Popen(cmd, env=self.environment(), stdout=out or None,
                                            stderr=subprocess.STDOUT if out else None, start_new_session=True)
        finally:
            if out is not None:
                out.close()
        return self

    def wait_ready(self, timeout_s: float = 120.0, model: str | None = None) -> None:
        """Wait for ``/v2/health/ready`` (and the model's readiness); raise if the process ends or time runs out."""
        import urllib.error
        import urllib.request

        url = f"http://{self.http_url}/v2/health/ready" if model is None else \
            f"http://{self.http_url}/v2/models/{model}/ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ManetEdgeError(f"tritonserver exited with code {self.process.returncode} while starting"
                                     + (f"; its log: {self.log_path}" if self.log_path else ""))
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise ManetEdgeError(f"tritonserver was not ready within {timeout_s:.0f} s ({url})"
                             + (f"; its log: {self.log_path}" if self.log_path else ""))

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (Triton finishes the requests under way, up to its exit timeout), then SIGKILL."""
        proc = self.process
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s if timeout_s is not None else self.exit_timeout_s + 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            return None if proc is None else proc.returncode
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
