"""``manet-edge eval seg`` prints tables and plain lines, never a Python dict."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner


def test_eval_seg_prints_no_dict(tmp_path, monkeypatch):
    evaluate = pytest.importorskip("manet_edge.train.evaluate")
    from manet_edge.commands import evaluate as eval_cmd

    result = {"summary": {"overall": {"n": 2, "iou_raw": 0.9, "dice_raw": 0.95, "iou": 0.91, "dice": 0.952}},
              "paper_iou_percent": dict(evaluate.PAPER_SEG_IOU), "per_image": []}
    monkeypatch.setattr(evaluate, "eval_segmenter", lambda *a, **k: result)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    eval_cmd.register(app)
    (tmp_path / "seg.pt").write_bytes(b"x")
    (tmp_path / "splits.json").write_text("{}")
    res = CliRunner().invoke(app, ["eval", "seg", str(tmp_path / "seg.pt"), "--data", str(tmp_path),
                                   "--splits", str(tmp_path / "splits.json")])
    assert res.exit_code == 0, res.output
    assert "{" not in res.output and "| overall | 2 |" in res.output
    assert "IoU %: normal 93.49, tb 93.14, covid 89.07, overall 92.50" in res.output
