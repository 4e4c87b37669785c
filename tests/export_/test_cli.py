"""``manet-edge export``: help without heavy imports, option errors, a tiny end-to-end export."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from manet_edge.commands import export as export_cmd


@pytest.fixture
def app():
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    export_cmd.register(app)
    return app


def test_help_lists_options_and_does_not_import_torch():
    code = ("import sys, typer; from typer.testing import CliRunner; from manet_edge.commands import export as e\n"
            "app = typer.Typer()\n@app.callback()\ndef r(): pass\ne.register(app)\n"
            "out = CliRunner().invoke(app, ['export', '--help']).output\n"
            "assert '--ma-op' in out and '--calib-dir' in out and '--format' in out, out\n"
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("args, phrase", [
    ([], "nothing to export"),
    (["--cls-model", "resnet18", "--seg-model", "default", "--precision", "int8"], "--calib-dir"),
    (["--cls-model", "resnet18", "--batch", "4"], "dynamic"),
])
def test_option_errors_name_the_fix(app, tmp_path, args, phrase):
    result = CliRunner().invoke(app, ["export", "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and phrase in result.output  # usage errors: 2 in every command


def test_tiny_export_with_verify_and_no_overwrite(app, tmp_path):
    pytest.importorskip("torch")
    args = ["export", "--cls-model", "resnet18-ma", "--size", "32", "--out", str(tmp_path), "--verify",
            "--precision", "fp16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "classifier.onnx").is_file() and (tmp_path / "classifier.fp16.onnx").is_file()
    assert "fused vs inline (blobs)" in result.output and "parity: ok" in result.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_engine_jobs_pick_the_requested_precision(tmp_path):
    from manet_edge.export.plan import engine_jobs

    written = [tmp_path / n for n in ("segmenter.onnx", "classifier.onnx", "classifier.int8.onnx")]
    assert engine_jobs(written, "int8") == [(written[0], "fp32"), (written[2], "int8")]
    assert engine_jobs(written[:2], "fp32") == [(written[0], "fp32"), (written[1], "fp32")]


def test_plan_lists_the_files_it_writes_and_rejects_bad_combinations(tmp_path):
    from manet_edge.errors import BadInputError
    from manet_edge.export.plan import ExportPlan

    plan = ExportPlan(seg_model="default", cls_model="resnet18", out=tmp_path, precision="fp16")
    assert [p.name for p in plan.planned()] == ["segmenter.onnx", "segmenter.fp16.onnx", "classifier.onnx",
                                                "classifier.fp16.onnx"]
    plan.check()
    with pytest.raises(BadInputError, match="--calib-seg"):
        ExportPlan(cls_model="resnet18", precision="int8", calib_dir=tmp_path).check()
    with pytest.raises(BadInputError, match="not both"):
        ExportPlan(cls_model="resnet18", cls_checkpoint=tmp_path / "x.pt").check()
    with pytest.raises(BadInputError, match="--ma-op must be one of fused, inline"):
        ExportPlan(cls_model="resnet18", ma_op="auto")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.precision = "int8"  # type: ignore[misc]


def test_run_export_refuses_to_overwrite_before_exporting(tmp_path):
    from manet_edge.errors import ManetEdgeError
    from manet_edge.export.plan import ExportPlan, run_export

    (tmp_path / "classifier.onnx").write_bytes(b"keep me")
    with pytest.raises(ManetEdgeError, match="overwrite"):
        run_export(ExportPlan(cls_model="resnet18", out=tmp_path), echo=lambda *a, **k: None)
    assert (tmp_path / "classifier.onnx").read_bytes() == b"keep me"


@pytest.mark.parametrize("body, op_types", [("broadcast", ["Mul"]), ("expand", None)])
def test_ma_body_option_reaches_the_graph_and_the_card(app, tmp_path, body, op_types):
    pytest.importorskip("torch")
    import json

    import onnx
    from onnx import helper

    result = CliRunner().invoke(app, ["export", "--cls-model", "resnet18-ma", "--size", "32", "--out",
                                      str(tmp_path), "--ma-body", body])
    assert result.exit_code == 0, result.output
    model = onnx.load(tmp_path / "classifier.onnx")
    sites = [n for n in model.graph.node if n.op_type == "MaskAttentionMul"]
    assert sites
    for n in sites:
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        assert a["map_channels"] == (1 if body == "broadcast" else a["channels"])
    (function,) = [f for f in model.functions if f.name == "MaskAttentionMul"]
    assert op_types is None or [n.op_type for n in function.node] == op_types
    card = json.loads(next(p.value for p in model.metadata_props if p.key == "manet_edge.card"))
    assert card["extra"]["ma_body"] == body


def test_ood_options_are_checked_and_reach_the_fit(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from manet_edge import ood_fit
    from manet_edge.errors import BadInputError
    from manet_edge.export.plan import ExportPlan, run_export

    with pytest.raises(BadInputError, match="--ood-splits"):
        ExportPlan(cls_model="resnet18", seg_model="default", ood_data=tmp_path).check()
    with pytest.raises(BadInputError, match="--no-heatmap-output"):
        ExportPlan(cls_model="resnet18", seg_model="default", ood_data=tmp_path, ood_splits=tmp_path / "s.json",
                   heatmap_output=False).check()
    calls = []
    monkeypatch.setattr(ood_fit, "fit_into_card", lambda *a, **k: calls.append(a) or "fitted")
    lines = []
    out = tmp_path / "out"
    run_export(ExportPlan(cls_model="resnet18", seg_model="default", size=32, out=out, ood_data=tmp_path,
                          ood_splits=tmp_path / "s.json"), echo=lambda m="", **k: lines.append(m))
    assert calls == [(out / "classifier.onnx", out / "segmenter.onnx", tmp_path, tmp_path / "s.json")]
    assert "  fitted" in lines
