"""`manet-edge engine build|inspect` through typer's CliRunner (the engine group only)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from manet_edge.commands import engine as engine_cmd


@pytest.fixture
def app():
    app = typer.Typer()
    engine_cmd.register(app)

    @app.callback()
    def _root() -> None:  # keep "engine" as a sub-command
        pass
    return app


def _run(app, *args):
    return CliRunner().invoke(app, ["engine", *map(str, args)])


def test_help_works_without_tensorrt(app, no_tensorrt):
    res = _run(app, "build", "--help")
    assert res.exit_code == 0
    for opt in ("--precision", "--batch", "--min-batch", "--workspace-mb", "--timing-cache", "--dla-core",
                "--rebuild"):
        assert opt in res.output


def test_build_without_tensorrt_exits_2_naming_the_extra(app, tiny_onnx, no_tensorrt):
    res = _run(app, "build", tiny_onnx, "--precision", "fp16")
    assert res.exit_code == 2
    assert "pip install 'manet-edge[trt]'" in res.output
    assert not (tiny_onnx.parent / "classifier.fp16.engine").exists()


def test_bad_profile_is_reported_before_tensorrt(app, tiny_onnx, no_tensorrt):
    res = _run(app, "build", tiny_onnx, "--batch", 4, "--max-batch", 8)
    assert res.exit_code == 2 and "not both" in res.output


def test_build_and_inspect_with_fake_tensorrt(app, tiny_onnx, fake_trt, fake_cuda, tmp_path):
    fake_trt("10.3.0")
    out = tmp_path / "cls.engine"
    res = _run(app, "build", tiny_onnx, "--out", out, "--precision", "fp16", "--min-batch", 1, "--max-batch", 4)
    assert res.exit_code == 0, res.output
    assert "built:" in res.output and out.is_file()
    res = _run(app, "build", tiny_onnx, "--out", out, "--precision", "fp16", "--min-batch", 1, "--max-batch", 4)
    assert res.exit_code == 0 and "up to date" in res.output
    res = _run(app, "inspect", out)
    assert res.exit_code == 0, res.output
    assert "precision:     fp16" in res.output and "min 1 / opt 4 / max 4" in res.output
    assert "this machine: compatible" in res.output
    fake_cuda.cc = "8.7"
    res = _run(app, "inspect", out)
    assert res.exit_code == 1 and "GPU compute capability" in res.output and "--rebuild" in res.output
    res = _run(app, "inspect", out, "--json")
    assert res.exit_code == 1 and '"what": "GPU compute capability"' in res.output


def test_inspect_on_a_machine_without_tensorrt(app, tiny_onnx, fake_trt, tmp_path, monkeypatch):
    fake_trt("10.3.0")
    out = tmp_path / "cls.engine"
    assert _run(app, "build", tiny_onnx, "--out", out).exit_code == 0
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    res = _run(app, "inspect", out)
    assert res.exit_code == 0 and "cannot check" in res.output and "manet-edge[trt]" in res.output


def test_inspect_without_manifest(app, tmp_path):
    engine = tmp_path / "foreign.engine"
    engine.write_bytes(b"x")
    res = _run(app, "inspect", engine)
    assert res.exit_code == 2 and "no engine manifest" in res.output


def test_command_module_imports_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        import manet_edge.commands.engine
        heavy = [m for m in ("tensorrt", "numpy", "onnx", "torch", "cuda", "pycuda") if m in sys.modules]
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_runtime_does_not_import_export():
    code = textwrap.dedent("""
        import sys
        import manet_edge.runtime.tensorrt, manet_edge.runtime.engine_manifest, manet_edge.runtime.cuda
        print(sorted(m for m in sys.modules if m.startswith("manet_edge.export") or m in ("tensorrt", "torch")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ensure_engine_rebuilds_only_when_asked(tiny_onnx, fake_trt, fake_cuda, tmp_path):
    from manet_edge.runtime.engine_manifest import EngineMismatchError, read_manifest

    trt = fake_trt("10.3.0")
    out = tmp_path / "cls.engine"
    from manet_edge.export.engine import build_engine

    build_engine(tiny_onnx, out, echo=lambda m: None)
    assert engine_cmd.ensure_engine(out) is False
    fake_cuda.cc = "8.7"
    with pytest.raises(EngineMismatchError, match="--rebuild"):
        engine_cmd.ensure_engine(out)
    msgs = []
    assert engine_cmd.ensure_engine(out, rebuild=True, echo=msgs.append) is True
    assert trt.rec.builds == 2 and read_manifest(out).env.compute_capability == "8.7"
    assert any("rebuilding" in m for m in msgs)
