"""``manet-edge compare``: the bundled models on (a copy of) the bundled samples, A vs B and golden
outputs: self-comparison, save + compare, a tampered golden, a changed model hash, bad options."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from manet_edge import CLASSES
from manet_edge.assets import model_paths, samples_dir
from manet_edge.commands import compare as compare_cmd
from manet_edge.compare import sha256_file

REPO = Path(__file__).resolve().parents[2]
N_SAMPLES = len([p for p in samples_dir().iterdir() if not p.name.startswith(".")])
FAST = ["--streams", "1", "--a-threads", "1"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root (keeps `compare` a sub-command)."""

    compare_cmd.register(app)
    return app


def run(app, *args):
    return CliRunner().invoke(app, ["compare", *map(str, args)], env={"COLUMNS": "400"})


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("samples") / "xrays"
    shutil.copytree(samples_dir(), folder)
    return folder


@pytest.fixture(scope="module")
def golden(app, samples, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("golden") / "g"
    res = run(app, samples, "--save-golden", folder, "--a-precision", "fp32", *FAST)
    assert res.exit_code == 0, res.output
    return folder


def copy_golden(golden: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "golden"
    shutil.copytree(golden, dst)
    return dst


def test_ort_fp32_against_itself_is_identical(app, samples, tmp_path):
    out = tmp_path / "report"
    res = run(app, samples, "--out", out, "--a-precision", "fp32", *FAST)
    assert res.exit_code == 0, res.output
    assert "result: PASS" in res.stdout
    rows = read_csv(out / "compare.csv")
    assert len(rows) == N_SAMPLES
    for r in rows:
        assert r["status_a"] == r["status_b"] == "ok" and r["flip"] == "no" and r["outside"] == ""
        assert float(r["max_abs_dp"]) == 0.0 and float(r["mask_iou"]) == 1.0
        assert float(r["lung_fraction_diff"]) == 0.0
    doc = json.loads((out / "compare.json").read_text())
    assert doc["summary"] == {"files": N_SAMPLES, "flips": 0, "max_abs_dp": 0.0, "min_mask_iou": 1.0,
                              "max_lung_fraction_diff": 0.0, "status_differences": 0, "files_outside": 0,
                              "passed": True}
    assert doc["meta"]["mode"] == "configs" and doc["changes"] == []
    # the report is never silently replaced
    again = run(app, samples, "--out", out, *FAST)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_golden_holds_outputs_hashes_versions_and_machine(golden):
    from manet_edge.cpu import describe

    manifest = json.loads((golden / "manifest.json").read_text())
    run_ = manifest["run"]
    seg, cls = model_paths(None)
    assert run_["models"]["segmenter"]["sha256"] == sha256_file(seg)
    assert run_["models"]["classifier"]["sha256"] == sha256_file(cls)
    assert run_["models"]["classifier"]["card"]["kind"] == "cls"
    assert run_["backend"] == "onnxruntime" and run_["precision"] == {"segmenter": "fp32", "classifier": "fp32"}
    assert {"manet_edge", "numpy", "onnxruntime", "scikit-image", "pillow"} <= set(run_["libraries"])
    assert "torch" not in run_["libraries"]
    assert run_["machine"]["cpu"] == describe()["cpu"]
    assert "--save-golden" in manifest["command"]
    rows = json.loads((golden / "outputs.json").read_text())["rows"]
    assert len(rows) == N_SAMPLES == manifest["files"]
    with np.load(golden / "masks.npz") as npz:
        for r in rows:
            assert r["status"] == "ok" and set(r["probabilities"]) == set(CLASSES)
            mask = npz[r["mask"]]
            assert mask.dtype == bool and list(mask.shape) == r["mask_shape"]
            assert mask.mean() == pytest.approx(r["lung_fraction"], abs=1e-6)


def test_save_golden_then_golden_passes(app, samples, golden, tmp_path):
    out = tmp_path / "report"
    res = run(app, samples, "--golden", golden, "--out", out, "--a-precision", "fp32", *FAST)
    assert res.exit_code == 0, res.output
    assert "result: PASS" in res.stdout and "unchanged since the golden" in res.stdout
    doc = json.loads((out / "compare.json").read_text())
    assert doc["meta"]["mode"] == "golden" and doc["summary"]["passed"] and doc["summary"]["flips"] == 0
    assert doc["summary"]["max_abs_dp"] == 0.0 and doc["summary"]["min_mask_iou"] == 1.0
    # an existing golden is never silently replaced
    again = run(app, samples, "--save-golden", golden, *FAST)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_tampered_golden_fails_and_names_the_files(app, samples, golden, tmp_path):
    tampered = copy_golden(golden, tmp_path)
    doc = json.loads((tampered / "outputs.json").read_text())
    moved, flipped = doc["rows"][1], doc["rows"][3]
    moved["probabilities"]["normal"] += 0.01
    flipped["prediction"] = next(c for c in CLASSES if c != flipped["prediction"])
    (tampered / "outputs.json").write_text(json.dumps(doc))
    out = tmp_path / "report"
    res = run(app, samples, "--golden", tampered, "--out", out, *FAST)
    assert res.exit_code == 1, res.output
    assert "result: FAIL" in res.stdout
    assert f"{moved['file']}: max |dp| 0.01" in res.stdout
    assert f"{flipped['file']}: class" in res.stdout
    rows = {r["file"]: r for r in read_csv(out / "compare.csv")}
    assert rows[moved["file"]]["outside"] == "atol"
    assert float(rows[moved["file"]]["max_abs_dp"]) == pytest.approx(0.01, abs=1e-9)
    assert rows[flipped["file"]]["flip"] == "yes" and "flip" in rows[flipped["file"]]["outside"]
    assert sum(r["outside"] != "" for r in rows.values()) == 2
    summary = json.loads((out / "compare.json").read_text())["summary"]
    assert summary["flips"] == 1 and not summary["passed"]
    # one flip is within --max-flips 1, but the probability still breaks --atol
    res = run(app, samples, "--golden", tampered, "--out", out, "--overwrite", "--max-flips", "1", *FAST)
    assert res.exit_code == 1 and "class flips" in res.stdout


def test_changed_model_hash_library_and_machine_are_reported(app, samples, golden, tmp_path):
    changed = copy_golden(golden, tmp_path)
    manifest = json.loads((changed / "manifest.json").read_text())
    manifest["run"]["models"]["classifier"]["sha256"] = "0" * 64
    manifest["run"]["libraries"]["numpy"] = "0.0.1"
    manifest["run"]["machine"]["cpu"] = "Another CPU 9000"
    (changed / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "report"
    res = run(app, samples, "--golden", changed, "--out", out, *FAST)
    assert res.exit_code == 0, res.output  # the outputs still agree: changes are reported, not failed
    assert "changed since the golden" in res.stdout
    assert "[model] classifier model sha256: 0000000000000000... ->" in res.stdout
    assert "segmenter model sha256" not in res.stdout
    assert "[library] numpy: 0.0.1 -> " in res.stdout
    assert "[machine] machine cpu: Another CPU 9000 -> " in res.stdout
    kinds = {(c["kind"], c["what"]) for c in json.loads((out / "compare.json").read_text())["changes"]}
    assert kinds == {("model", "classifier model sha256"), ("library", "numpy"), ("machine", "machine cpu")}


def test_a_file_missing_from_the_golden_is_a_status_difference(app, samples, golden, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(samples.iterdir())[:2]:
        shutil.copy(p, few / p.name)
    (few / "notes.txt").write_text("not an image\n")
    res = run(app, few, "--golden", golden, "--out", tmp_path / "r", *FAST)
    assert res.exit_code == 1, res.output
    rows = {r["file"]: r for r in read_csv(tmp_path / "r" / "compare.csv")}
    assert rows["notes.txt"]["status_a"] == "error" and rows["notes.txt"]["status_b"] == "missing"
    assert "not a recognised image" in rows["notes.txt"]["error_a"]
    missing = [r for r in rows.values() if r["status_a"] == "missing"]
    assert len(missing) == N_SAMPLES - 2 and all(r["outside"] == "status" for r in missing)
    assert "status differences" in res.stdout


@pytest.mark.parametrize("args, phrase", [
    (["--b-precision", "fp32", "--golden", "{golden}"], "drop the --b-* options"),
    (["--save-golden", "{tmp}/new", "--golden", "{golden}"], "cannot be combined"),
    (["--save-golden", "{tmp}/new", "--b-backend", "openvino"], "drop the --b-* options"),
    (["--golden", "{tmp}/nowhere"], "not a folder"),
    (["--golden", "{tmp}"], "no manifest.json"),
    (["--a-precision", "fp99"], "unknown precision"),
    (["--b-precision", "bf16"], "cannot run precision"),
    (["--atol", "-1"], "'--atol'"),
    (["--min-mask-iou", "2"], "'--min-mask-iou'"),
    (["--max-flips", "-3"], "'--max-flips'"),
    (["--no-such-option"], "No such option"),
])
def test_bad_options_exit_2(app, samples, golden, tmp_path, args, phrase):
    args = [a.format(golden=golden, tmp=tmp_path) for a in args]
    res = run(app, samples, "--out", tmp_path / "report", *args)
    assert res.exit_code == 2, res.output
    assert phrase in res.output
    assert not (tmp_path / "report").exists() and not (tmp_path / "new").exists()


BLOCK_HEAVY = textwrap.dedent('''
    import json, sys, typer
    from typer.testing import CliRunner
    from manet_edge.commands import compare
    app = typer.Typer()
    @app.callback()
    def _root():
        """test root"""
    compare.register(app)
''')


def test_compare_onnxruntime_vs_openvino_never_imports_torch(samples, tmp_path):
    """The torch-free pattern of tests/cli/test_torch_free.py, in a fresh interpreter."""
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(samples.iterdir())[:2]:
        shutil.copy(p, few / p.name)
    out = tmp_path / "report"
    code = BLOCK_HEAVY + textwrap.dedent(f'''
        res = CliRunner().invoke(app, ["compare", {str(few)!r}, "--out", {str(out)!r}, "--a-backend", "onnxruntime",
                                       "--b-backend", "openvino", "--streams", "1", "--a-threads", "1"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "tensorrt"))
        print(json.dumps({{"exit": res.exit_code, "output": res.output, "heavy": heavy,
                          "openvino": "openvino" in sys.modules}}))
    ''')
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200",
                               "HOME": str(Path.home())})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"compare imported {report['heavy']}"
    assert report["openvino"], "the B configuration did not run on OpenVINO"
    assert report["exit"] == 0, report["output"]  # fp32 ONNX Runtime and OpenVINO agree within 1e-4
    assert "[backend] backend: onnxruntime (A), openvino (B)" in report["output"]
