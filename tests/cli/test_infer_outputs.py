"""``manet-edge infer``: what issue 16 found in its outputs and model lookup.

Reduced-precision model files (``segmenter.fp16.onnx`` ...) are found by ``--precision``; the
output folder is locked for one run and never read back as input (however it is reached); file
names that are not UTF-8, that are at the file system's length limit, or that look like a
spreadsheet formula still give a complete, valid CSV/JSON.
"""

from __future__ import annotations

import csv
import json
import os

import onnx
import pytest
from typer.testing import CliRunner

from manet_edge.fileutil import OutputLock
from manet_edge.metadata import CARD_KEY


def run(app, *args):
    return CliRunner().invoke(app, ["infer", *map(str, args), "--no-progress"], env={"COLUMNS": "400"})


def read_csv(out):
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _retag(path, precision: str) -> None:
    """Rewrite the model card of ``path`` to say ``precision`` (the graph stays fp32: enough for
    ONNX Runtime, which runs what the file holds and reports the card's precision)."""
    model = onnx.load(str(path))
    card = json.loads({p.key: p.value for p in model.metadata_props}[CARD_KEY])
    card["precision"] = precision
    onnx.helper.set_model_props(model, {CARD_KEY: json.dumps(card)})
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def precision_models(tmp_path_factory, synth):
    """fp32 files plus segmenter/classifier.fp16.onnx and classifier.int8.onnx, as `export` names them."""
    folder = synth.make_models_dir(tmp_path_factory.mktemp("precision-models"))
    for stem, maker in (("segmenter", synth.make_segmenter), ("classifier", synth.make_classifier)):
        maker(folder / f"{stem}.fp16.onnx")
        _retag(folder / f"{stem}.fp16.onnx", "fp16")
    synth.make_classifier(folder / "classifier.int8.onnx")
    _retag(folder / "classifier.int8.onnx", "int8")
    return folder


def _meta(out):
    return json.loads((out / "predictions.json").read_text())["meta"]


@pytest.mark.parametrize("precision,seg_file,cls_file,ran", [
    ("fp16", "segmenter.fp16.onnx", "classifier.fp16.onnx", {"segmenter": "fp16", "classifier": "fp16"}),
    ("int8", "segmenter.onnx", "classifier.int8.onnx", {"segmenter": "fp32", "classifier": "int8"}),
    ("fp32", "segmenter.onnx", "classifier.onnx", {"segmenter": "fp32", "classifier": "fp32"}),
])
def test_precision_finds_the_exported_files(app, image_folder, precision_models, tmp_path, precision, seg_file,
                                            cls_file, ran):
    out = tmp_path / "o"
    res = run(app, image_folder, "--out", out, "--models", precision_models, "--precision", precision)
    assert res.exit_code == 0, res.output
    meta = _meta(out)
    assert os.path.basename(meta["models"]["segmenter"]["path"]) == seg_file
    assert os.path.basename(meta["models"]["classifier"]["path"]) == cls_file
    assert meta["precision"] == ran


def test_precision_without_the_files_says_how_to_make_them(app, image_folder, models_dir, tmp_path):
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models_dir, "--precision", "fp16")
    assert res.exit_code == 2
    assert "segmenter.fp16.onnx" in res.stderr and "manet-edge export --precision fp16" in res.stderr
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


def test_precision_on_the_bundled_models_is_explained(app, image_folder, tmp_path):
    from manet_edge.assets import default_models_dir

    if not (default_models_dir() / "segmenter.onnx").is_file():
        pytest.skip("default models not bundled")
    res = run(app, image_folder, "--out", tmp_path / "o", "--precision", "fp16")
    assert res.exit_code == 2
    assert "bundled models are fp32 only" in res.stderr and "--models DIR" in res.stderr


def test_a_second_run_into_a_locked_out_is_refused(app, image_folder, models_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with OutputLock(out):
        res = run(app, image_folder, "--out", out, "--models", models_dir)
        assert res.exit_code == 2 and "another manet-edge run is writing to" in res.stderr
        assert str(os.getpid()) in res.stderr
    assert not (out / OutputLock.NAME).exists()
    res = run(app, image_folder, "--out", out, "--models", models_dir)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "predictions.json"]  # lock removed


def test_out_reached_through_a_link_is_not_read(app, image_folder, models_dir, tmp_path):
    real_out = image_folder / "results"
    link = tmp_path / "out-link"
    link.symlink_to(real_out, target_is_directory=True)
    real_out.mkdir()
    for _ in range(2):
        res = run(app, image_folder, "--out", link, "--models", models_dir, "--save-masks", "--overwrite")
        assert res.exit_code == 0, res.output
        assert len(read_csv(real_out)) == 6
    linked_input = tmp_path / "in-link"
    linked_input.symlink_to(image_folder, target_is_directory=True)
    res = run(app, linked_input, "--out", real_out, "--models", models_dir, "--overwrite")
    assert res.exit_code == 0 and len(read_csv(real_out)) == 6


def test_out_equal_to_the_input_is_refused(app, image_folder, models_dir, tmp_path):
    link = tmp_path / "same"
    link.symlink_to(image_folder, target_is_directory=True)
    for out in (image_folder, link):
        res = run(app, image_folder, "--out", out, "--models", models_dir)
        assert res.exit_code == 2 and "is the input folder" in res.stderr
    assert not (image_folder / "predictions.csv").exists()


def test_files_behind_a_linked_folder_are_read(app, image_folder, models_dir, tmp_path, synth):
    elsewhere = tmp_path / "elsewhere"
    synth.save_png(elsewhere / "linked.png", synth.xray(synth.SIZE, seed=21))
    (image_folder / "c").symlink_to(elsewhere, target_is_directory=True)
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models_dir)
    assert res.exit_code == 0, res.output
    assert "c/linked.png" in [r["file"] for r in read_csv(tmp_path / "o")]


def test_a_name_that_is_not_utf8_is_escaped_not_fatal(app, image_folder, models_dir, tmp_path, synth):
    raw = os.path.join(os.fsencode(image_folder), b"caf\xe9.png")  # latin-1, not UTF-8
    synth.save_png(type(image_folder)(os.fsdecode(raw)), synth.xray(synth.SIZE, seed=5))
    out = tmp_path / "o"
    res = run(app, image_folder, "--out", out, "--models", models_dir, "--save-masks")
    assert res.exit_code == 0, res.output
    names = [r["file"] for r in read_csv(out)]
    assert "caf\\xe9.png" in names and len(names) == 7
    doc = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert doc["meta"]["file_names"]["escaped"] == 1
    assert os.path.exists(os.path.join(os.fsencode(out), b"masks", b"caf\xe9.png"))


def test_a_name_at_name_max_can_have_a_mask(app, image_folder, models_dir, tmp_path, synth):
    long = "x" * 246 + ".png"  # 250 bytes: legal, and so is its mask; a temporary name must fit too
    synth.save_png(image_folder / long, synth.xray(synth.SIZE, seed=6))
    out = tmp_path / "o"
    res = run(app, image_folder, "--out", out, "--models", models_dir, "--save-masks", "--save-overlays")
    assert res.exit_code == 0, res.output
    assert (out / "masks" / long).is_file() and (out / "overlays" / long).is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_formula_like_name_is_escaped_in_the_csv_only(app, image_folder, models_dir, tmp_path, synth):
    synth.save_png(image_folder / "=HYPERLINK(1).png", synth.xray(synth.SIZE, seed=8))
    out = tmp_path / "o"
    assert run(app, image_folder, "--out", out, "--models", models_dir).exit_code == 0
    assert "'=HYPERLINK(1).png" in [r["file"] for r in read_csv(out)]
    rows = json.loads((out / "predictions.json").read_text())["rows"]
    assert "=HYPERLINK(1).png" in [r["file"] for r in rows]


def test_empty_masks_count_as_failed_not_flagged(app, image_folder, tmp_path, synth):
    models = synth.make_models_dir(tmp_path / "m", variant="empty")
    out = tmp_path / "o"
    res = run(app, image_folder, "--out", out, "--models", models)
    assert res.exit_code == 1
    assert _meta(out)["summary"] == {"files": 6, "ok": 0, "failed": 6, "flagged": 0}
    assert "6 files: 0 ok, 6 failed" in res.stdout and "flagged" not in res.stdout


def test_a_missing_backend_is_named_before_the_models(app, image_folder, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable, whether installed or not
    res = run(app, image_folder, "--out", tmp_path / "o", "--backend", "tensorrt")
    assert res.exit_code == 2 and "pip install 'manet-edge[trt]'" in res.stderr
    assert "missing" not in res.stderr and "engine" not in res.stderr.split("pip install")[0]


def test_no_bundled_torch_models_is_not_a_broken_install(app, image_folder, tmp_path):
    pytest.importorskip("torch")
    res = run(app, image_folder, "--out", tmp_path / "o", "--backend", "torch")
    assert res.exit_code == 2
    assert "none ship with manet-edge" in res.stderr and "--models DIR" in res.stderr
    assert "bundled default models are missing" not in res.stderr
