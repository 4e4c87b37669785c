"""manet_edge.results: exact CSV columns, JSON rows + metadata, artifact names, mask/overlay PNGs."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
from PIL import Image

from manet_edge.config import PostprocessConfig
from manet_edge.pipeline import ImageResult, InputFile, WorkItem
from manet_edge.results import (
    CSV_COLUMNS,
    ArtifactWriter,
    artifact_names,
    csv_text,
    library_versions,
    overlay_image,
    write_predictions,
)

ROWS = [
    ImageResult("a/x.png", "ok", prediction="covid", probabilities=(0.1, 0.6, 0.1, 0.1, 0.1),
                lung_fraction=0.25, flags=()),
    ImageResult("b.dcm", "ok", prediction="normal", probabilities=(0.5, 0.2, 0.1, 0.1, 0.1),
                lung_fraction=0.8, flags=("lung_fraction_high",)),
    ImageResult("c.txt", "error", error="not a recognised image file\nsecond line"),
]


def test_csv_has_exactly_the_contract_columns():
    assert CSV_COLUMNS == ("file", "status", "error", "prediction", "p_normal", "p_covid", "p_tb", "p_bacterial",
                           "p_viral", "lung_fraction", "flags", "ood_score", "heat_in_lung")
    rows = list(csv.DictReader(io.StringIO(csv_text(ROWS))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["p_covid"] == "0.600000" and rows[0]["lung_fraction"] == "0.2500" and rows[0]["flags"] == ""
    assert rows[1]["flags"] == "lung_fraction_high"
    assert rows[2]["status"] == "error" and rows[2]["prediction"] == "" and rows[2]["p_normal"] == ""
    assert rows[2]["error"] == "not a recognised image file second line"


def test_json_rows_and_meta(tmp_path):
    csv_path, json_path = write_predictions(tmp_path, ROWS, {"backend": "onnxruntime"})
    doc = json.loads(json_path.read_text())
    assert doc["meta"]["backend"] == "onnxruntime" and doc["columns"] == list(CSV_COLUMNS)
    assert doc["meta"]["file_names"]["escaped"] == 0
    assert [r["file"] for r in doc["rows"]] == [r.file for r in ROWS]
    assert doc["rows"][1]["flags"] == ["lung_fraction_high"] and doc["rows"][2]["p_viral"] is None
    assert csv_path.read_text().count("\n") == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_library_versions_do_not_import_torch():
    import sys

    had_torch = "torch" in sys.modules
    versions = library_versions()
    assert {"numpy", "onnxruntime", "python", "manet_edge"} <= set(versions)
    assert ("torch" in sys.modules) == had_torch


def test_artifact_names_avoid_collisions():
    names = artifact_names(["a/x.png", "a/y.jpg", "a/y.png", "IM0001", "z.dcm", "w.jpg", "w.jpg.png"])
    assert names["a/x.png"] == "a/x.png" and names["IM0001"] == "IM0001.png" and names["z.dcm"] == "z.png"
    assert names["a/y.jpg"] == "a/y.jpg.png" and names["a/y.png"] == "a/y.png.png"
    assert len(set(v.lower() for v in names.values())) == len(names)


def test_mask_png_is_0_255_at_the_input_resolution(tmp_path):
    mask = np.zeros((64, 64), bool)
    mask[16:48, 8:30] = True
    item = WorkItem(0, InputFile(tmp_path / "in" / "x.jpg", "sub/x.jpg"), orig_shape=(300, 200), mask=mask,
                    display=np.full((150, 100), 90, np.uint8), probabilities=np.array([0.1, 0.2, 0.5, 0.1, 0.1]),
                    lung_fraction=0.17)
    writer = ArtifactWriter(tmp_path, artifact_names(["sub/x.jpg"]), masks=True, overlays=True)
    assert writer.planned_paths() == [tmp_path / "masks/sub/x.png", tmp_path / "overlays/sub/x.png"]
    writer(item, PostprocessConfig())
    saved = np.asarray(Image.open(tmp_path / "masks/sub/x.png"))
    assert saved.shape == (300, 200) and saved.dtype == np.uint8 and set(np.unique(saved)) == {0, 255}
    assert abs((saved > 0).mean() - mask.mean()) < 0.01
    # with the probability map kept, the outline moves to where the map crosses the threshold
    prob = np.where(mask, 0.9, 0.1).astype(np.float32)
    prob[16:48, 30] = 0.7  # the column just right of the mask is lung by the map's estimate
    item.prob = prob
    writer = ArtifactWriter(tmp_path / "p", artifact_names(["sub/x.jpg"]), masks=True, overlays=False)
    writer(item, PostprocessConfig())
    refined = np.asarray(Image.open(tmp_path / "p/masks/sub/x.png")) > 0
    assert refined.sum() > (saved > 0).sum() and refined[150, 30 * 200 // 64 + 1]
    overlay = Image.open(tmp_path / "overlays/sub/x.png")
    assert overlay.mode == "RGB" and overlay.size == (100, 150)


def test_overlay_draws_outline_and_text():
    mask = np.zeros((200, 200), bool)
    mask[50:150, 40:90] = True
    rgb = overlay_image(np.full((200, 200), 100, np.uint8), mask, ["tb 0.91"], "ok")
    green = (rgb[..., 1] > 200) & (rgb[..., 0] < 50)
    assert green[50:150, 40].any() and not green[100, 65]  # on the outline, not inside
    assert (rgb[:20, :60] == 0).all(axis=2).any()  # the black text box
