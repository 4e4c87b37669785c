"""The base install explains itself: every command that needs an extra says so in one line.

Each command runs in a fresh interpreter through the real command line (``cli.py``) with torch,
torchvision and TensorRT made unimportable, as in ``pip install manet-edge`` without extras. It
must exit 2, print ``pip install 'manet-edge[EXTRA]'`` and no traceback. Usage errors exit 2 in
every command, and ``--version`` works.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

RUN_BLOCKED = textwrap.dedent('''
    import importlib.abc, runpy, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "tensorrt"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, _Block())
    sys.argv = ["manet-edge", *sys.argv[1:]]
    runpy.run_module("cli", run_name="__main__", alter_sys=True)
''')


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN_BLOCKED, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200",
                               "HOME": str(Path.home())})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("base-install")
    (root / "data").mkdir()
    (root / "ckpt.pt").write_bytes(b"not read: torch is missing first")
    (root / "splits.json").write_text("{}")
    return {"root": root, "data": root / "data", "ckpt": root / "ckpt.pt", "splits": root / "splits.json",
            "onnx": models_dir / "segmenter.onnx"}


COMMANDS = {
    "export": (["export", "--cls-model", "resnet18", "--out", "{root}/export"], "train"),
    "train seg": (["train", "seg", "--data", "{data}", "--out", "{root}/seg", "--splits", "{root}/s.json"], "train"),
    "train cls": (["train", "cls", "--data", "{data}", "--segmenter", "{onnx}", "--out", "{root}/cls",
                   "--splits", "{root}/c.json", "--cache", "{root}/cache"], "train"),
    "eval seg": (["eval", "seg", "{ckpt}", "--data", "{data}", "--splits", "{splits}"], "train"),
    "eval cls": (["eval", "cls", "{ckpt}", "--data", "{data}", "--splits", "{splits}", "--cache", "{root}/cache"],
                 "train"),
    "gradcam": (["gradcam", "{ckpt}", "--data", "{data}", "--splits", "{splits}", "--out", "{root}/gc",
                 "--cache", "{root}/cache"], "train"),
    "flops": (["flops", "resnet50"], "train"),
    "bench": (["bench", "--models", "resnet18", "--backends", "torch,onnxruntime", "--sizes", "32", "--runs", "1",
               "--warmup", "0", "--out", "{root}/bench"], "train"),
    "engine build": (["engine", "build", "{onnx}", "--out", "{root}/seg.engine"], "trt"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_missing_extra_is_one_line_and_exit_2(name, inputs):
    args, extra = COMMANDS[name]
    proc = _cli(*(a.format(**inputs) for a in args))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert f"pip install 'manet-edge[{extra}]'" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines


def test_version():
    from manet_edge import __version__

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"manet-edge {__version__}", proc.stderr


USAGE_ERRORS = {
    "export": ["export", "--out", "{root}/e2"],  # nothing to export
    "engine build": ["engine", "build", "{onnx}", "--batch", "4", "--max-batch", "8"],
    "infer": ["infer", "{data}", "--precision", "fp8"],
    "bench": ["bench", "--sizes", "big"],
    "flops": ["flops", "no-such-model"],
    "train seg": ["train", "seg", "--data", "{root}/missing"],
    "eval cls": ["eval", "cls"],
}


@pytest.mark.parametrize("name", list(USAGE_ERRORS))
def test_usage_errors_exit_2(name, inputs):
    proc = _cli(*(a.format(**inputs) for a in USAGE_ERRORS[name]))
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
