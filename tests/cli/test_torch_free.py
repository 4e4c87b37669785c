"""Torch-free inference: ``infer`` on onnxruntime/openvino never imports torch, and every ``--help``
works with torch made unimportable. Each check runs in a fresh interpreter (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BLOCK_TORCH = textwrap.dedent('''
    import importlib.abc, sys
    class _BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("No module named 'torch' (blocked by the test)", name="torch")
            return None
    sys.meta_path.insert(0, _BlockTorch())
''')

TEST_APP = textwrap.dedent('''
    import importlib, pkgutil, sys, typer
    import manet_edge.commands as commands
    app = typer.Typer()
    @app.callback()
    def _root():
        """test root"""
    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__))
    for name in names:
        importlib.import_module(f"manet_edge.commands.{name}").register(app)
''')


def _python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200",
                               "HOME": str(Path.home())})


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_infer_never_imports_torch(backend, image_folder, models_dir, tmp_path):
    code = TEST_APP + textwrap.dedent(f'''
        import json
        from typer.testing import CliRunner
        res = CliRunner().invoke(app, ["infer", {str(image_folder)!r}, "--out", {str(tmp_path / "out")!r},
                                       "--models", {str(models_dir)!r}, "--backend", {backend!r},
                                       "--save-masks", "--save-overlays", "--no-progress"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "tensorrt"))
        print(json.dumps({{"exit": res.exit_code, "output": res.output, "heavy": heavy}}))
    ''')
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["exit"] == 0, report["output"]
    assert report["heavy"] == [], f"infer --backend {backend} imported {report['heavy']}"
    assert (tmp_path / "out" / "predictions.csv").is_file()


def test_every_help_works_without_torch():
    code = BLOCK_TORCH + TEST_APP + textwrap.dedent('''
        import json
        from typer.testing import CliRunner
        group = typer.main.get_command(app)
        paths, todo = [], [([], group)]
        while todo:
            prefix, cmd = todo.pop()
            paths.append(prefix)
            if getattr(cmd, "commands", None):  # a group (typer may vendor its own click)
                todo.extend((prefix + [n], c) for n, c in sorted(cmd.commands.items()))
        failures = {}
        for path in sorted(paths):
            res = CliRunner().invoke(app, path + ["--help"])
            if res.exit_code != 0:
                failures[" ".join(path)] = (res.output + repr(res.exception))[-500:]
        print(json.dumps({"modules": names, "helped": [" ".join(p) for p in sorted(paths)], "failures": failures,
                          "torch": "torch" in sys.modules}))
    ''')
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "infer" in report["modules"] and "infer" in report["helped"]
    assert report["failures"] == {}, report["failures"]
    assert report["torch"] is False


def test_manet_edge_help_without_torch():
    """The real console-script app (cli.py): skipped while some command modules are not written yet."""
    missing = [n for n in _cli_modules() if not (REPO / "manet_edge" / "commands" / f"{n}.py").is_file()]
    if missing:
        pytest.skip(f"command modules not written yet: {', '.join(missing)}")
    code = BLOCK_TORCH + textwrap.dedent('''
        import typer
        from typer.testing import CliRunner
        import cli
        group = typer.main.get_command(cli.app)
        paths, todo = [], [([], group)]
        while todo:
            prefix, cmd = todo.pop()
            paths.append(prefix)
            if getattr(cmd, "commands", None):
                todo.extend((prefix + [n], c) for n, c in sorted(cmd.commands.items()))
        for path in sorted(paths):
            res = CliRunner().invoke(cli.app, path + ["--help"])
            assert res.exit_code == 0, (path, res.output)
        assert "infer" in group.commands
        assert "torch" not in sys.modules
        print("ok")
    ''')
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def _cli_modules() -> list[str]:
    import ast

    tree = ast.parse((REPO / "cli.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_COMMAND_MODULES" for t in node.targets):
            return [elt.value for elt in node.value.elts]
    return []
