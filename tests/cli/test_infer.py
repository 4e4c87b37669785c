"""``manet-edge infer``: outputs, every bad input of issue 6, exit codes and the overwrite rule."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from manet_edge.commands import infer as infer_cmd
from manet_edge.results import CSV_COLUMNS


def run(app, *args):
    return CliRunner().invoke(app, ["infer", *map(str, args)], env={"COLUMNS": "400"})


def read_csv(out):
    with open(out / "predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_happy_path_outputs(app, image_folder, models_dir, tmp_path):
    out = tmp_path / "out"
    res = run(app, image_folder, "--out", out, "--models", models_dir, "--batch", "2", "--save-masks",
              "--save-overlays")
    assert res.exit_code == 0, res.output
    rows = read_csv(out)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["file"] for r in rows] == ["a/img0.png", "a/img1.png", "a/img2.png", "a/img3.png", "b/photo.jpg",
                                         "b/wide.png"]
    for r in rows:
        assert r["status"] == "ok" and r["prediction"] in ("normal", "covid", "tb", "bacterial", "viral")
        assert sum(float(r[f"p_{c}"]) for c in ("normal", "covid", "tb", "bacterial", "viral")) == pytest.approx(1, abs=1e-5)
    doc = json.loads((out / "predictions.json").read_text())
    meta = doc["meta"]
    assert meta["backend"] == "onnxruntime" and meta["precision"] == {"segmenter": "fp32", "classifier": "fp32"}
    assert meta["models"]["segmenter"]["card"]["kind"] == "seg" and meta["models"]["classifier"]["card"]["kind"] == "cls"
    assert {"decode", "seg_infer", "seg_post", "cls_infer", "finalize"} == set(meta["timings"]["stages"])
    assert "onnxruntime" in meta["libraries"] and "torch" not in meta["libraries"]
    assert meta["summary"] == {"files": 6, "ok": 6, "failed": 0, "flagged": 0}
    assert len(doc["rows"]) == 6
    mask = np.asarray(Image.open(out / "masks/b/wide.png"))
    assert mask.shape == (48, 80) and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(out / "masks/b/photo.png")).shape == (96, 96)
    assert (out / "overlays/a/img0.png").is_file()
    assert "6 files: 6 ok, 0 failed" in res.stdout
    umask = os.umask(0)
    os.umask(umask)
    for written in ("predictions.csv", "predictions.json", "masks/b/wide.png", "overlays/a/img0.png"):
        assert (out / written).stat().st_mode & 0o777 == 0o666 & ~umask, written  # as open() makes them


def test_openvino_backend_reports_fp32(app, image_folder, models_dir, tmp_path):
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models_dir, "--backend", "openvino")
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "o/predictions.json").read_text())["meta"]
    assert meta["precision"]["segmenter"] == "fp32" and meta["models"]["segmenter"]["runner"]["backend"] == "openvino"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_streams_give_the_same_rows_as_one_stream(app, image_folder, models_dir, tmp_path, backend):
    outs = {}
    for streams in (1, 3):
        out = tmp_path / f"s{streams}"
        res = run(app, image_folder, "--out", out, "--models", models_dir, "--backend", backend,
                  "--streams", streams, "--save-masks")
        assert res.exit_code == 0, res.output
        meta = json.loads((out / "predictions.json").read_text())["meta"]
        assert meta["config"]["streams"] == streams
        outs[streams] = read_csv(out)
        assert (out / "masks/b/wide.png").is_file()
    assert [r["file"] for r in outs[1]] == [r["file"] for r in outs[3]]
    for a, b in zip(outs[1], outs[3]):
        assert a["prediction"] == b["prediction"] and a["status"] == b["status"]
        assert float(a["p_covid"]) == pytest.approx(float(b["p_covid"]), abs=1e-5)


def test_plan_streams(monkeypatch):
    monkeypatch.setattr(infer_cmd, "_cpu_count", lambda: 8)
    assert infer_cmd.plan_streams("openvino", 0, None) == (4, 2)  # at most 4 streams, cores split evenly
    assert infer_cmd.plan_streams("openvino", 0, 4) == (2, 4)
    assert infer_cmd.plan_streams("openvino", 3, None) == (3, 2)
    assert infer_cmd.plan_streams("torch", 0, None) == (1, None)
    assert infer_cmd.plan_streams("tensorrt", 0, None) == (1, None)
    assert infer_cmd.plan_streams("openvino", 1, None) == (1, None)  # one stream: the backend's own threads
    monkeypatch.setattr(infer_cmd, "_cpu_count", lambda: 1)
    assert infer_cmd.plan_streams("openvino", 0, None) == (1, None)


def test_every_bad_input_is_a_named_error_row(app, image_folder, models_dir, tmp_path, synth):
    expected = synth.write_bad_files(image_folder / "bad")
    synth.write_mode_files(image_folder / "modes")
    out = tmp_path / "out"
    res = run(app, image_folder, "--out", out, "--models", models_dir, "--batch", "3", "--save-masks")
    assert res.exit_code == 1, res.output
    rows = {r["file"]: r for r in read_csv(out)}
    for name, phrase in expected.items():
        row = rows[f"bad/{name}"]
        assert row["status"] == "error" and phrase.lower() in row["error"].lower(), row
        assert row["prediction"] == "" and row["p_normal"] == ""
        assert f"error: bad/{name}: " in res.stderr
    assert all(r["status"] == "ok" for f, r in rows.items() if not f.startswith("bad/")), rows
    assert len([f for f in rows if f.startswith("modes/")]) == 14
    # The MONOCHROME1 fixture stores a positive film's pixels under the tag, so the decoded image
    # (inverted, as MONOCHROME1 requires) is a negative: the polarity check says so, the others pass.
    flagged = {f: r["flags"] for f, r in rows.items() if r["flags"]}
    assert flagged == {"modes/noext_dicom": "inverted_polarity"}, flagged
    assert f"{len(rows)} files: {len(rows) - len(expected)} ok (1 flagged), {len(expected)} failed" in res.stdout


def test_flagged_masks_are_reported(app, image_folder, tmp_path, synth):
    models = synth.make_models_dir(tmp_path / "m_small", variant="small")
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models)
    assert res.exit_code == 0, res.output
    rows = read_csv(tmp_path / "o")
    assert all(r["flags"] == "lung_fraction_low" and r["status"] == "ok" for r in rows)
    assert "warning: a/img0.png: implausible lung mask (lung_fraction_low" in res.stderr
    assert "(6 flagged)" in res.stdout
    models = synth.make_models_dir(tmp_path / "m_empty", variant="empty")
    res = run(app, image_folder, "--out", tmp_path / "o2", "--models", models)
    assert res.exit_code == 1
    assert all(r["status"] == "error" and r["flags"] == "empty_mask" for r in read_csv(tmp_path / "o2"))


def test_empty_folder(app, models_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"x")
    res = run(app, tmp_path / "empty", "--out", tmp_path / "o", "--models", models_dir)
    assert res.exit_code == 2 and "no files found" in res.stderr
    assert not (tmp_path / "o").exists()


def test_missing_folder_is_a_usage_error(app, models_dir, tmp_path):
    res = run(app, tmp_path / "nope", "--models", models_dir)
    assert res.exit_code == 2 and "does not exist" in res.output


def test_missing_models(app, image_folder, tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", tmp_path / "m")
    assert res.exit_code == 2 and "lacks the model files" in res.stderr and "manet-edge export" in res.stderr
    monkeypatch.setattr("manet_edge.assets.default_models_dir", lambda: tmp_path / "m")
    res = run(app, image_folder, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "bundled default models are missing" in res.stderr
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", tmp_path / "m", "--backend", "torch")
    assert res.exit_code == 2 and "segmenter.pt" in res.stderr
    assert not (tmp_path / "o").exists()


def test_incompatible_models(app, image_folder, tmp_path, synth):
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    synth.make_classifier(swapped / "segmenter.onnx")
    synth.make_segmenter(swapped / "classifier.onnx")
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", swapped)
    assert res.exit_code == 2 and "given as the segmenter, but its model card says it is a classifier" in res.stderr
    wrong = synth.make_models_dir(tmp_path / "wrong", card_size=256)
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", wrong)
    assert res.exit_code == 2 and "(N, 1, 256, 256)" in res.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "segmenter.onnx").write_bytes(b"junk")
    (tmp_path / "junk" / "classifier.onnx").write_bytes(b"junk")
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", tmp_path / "junk")
    assert res.exit_code == 2 and "segmenter.onnx" in res.stderr
    assert not (tmp_path / "o").exists()  # nothing created when nothing ran


def test_bad_precision(app, image_folder, models_dir, tmp_path):
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models_dir, "--precision", "bf16")
    assert res.exit_code == 2 and "'onnxruntime' cannot run precision 'bf16'" in res.stderr
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models_dir, "--precision", "fp64")
    assert res.exit_code == 2 and "choose one of" in res.stderr
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models_dir, "--backend", "onnx")
    assert res.exit_code == 2


def test_unwritable_output(app, image_folder, models_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    res = run(app, image_folder, "--out", tmp_path / "file" / "sub", "--models", models_dir)
    assert res.exit_code == 2 and "not writable" in res.stderr
    res = run(app, image_folder, "--out", tmp_path / "file", "--models", models_dir)
    assert res.exit_code == 2 and "is a file" in res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(app, image_folder, models_dir, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    res = run(app, image_folder, "--out", ro, "--models", models_dir)
    assert res.exit_code == 2 and "not writable" in res.stderr


def test_overwrite_rule(app, image_folder, models_dir, tmp_path):
    out = tmp_path / "out"
    assert run(app, image_folder, "--out", out, "--models", models_dir).exit_code == 0
    before = (out / "predictions.csv").read_bytes()
    (out / "predictions.csv").write_text("mine\n")
    res = run(app, image_folder, "--out", out, "--models", models_dir)
    assert res.exit_code == 2 and "refusing to overwrite" in res.stderr and "--overwrite" in res.stderr
    assert (out / "predictions.csv").read_text() == "mine\n"
    res = run(app, image_folder, "--out", out, "--models", models_dir, "--overwrite")
    assert res.exit_code == 0 and (out / "predictions.csv").read_bytes() == before
    # a mask from an earlier run blocks a run that would write it
    (out / "predictions.csv").unlink()
    (out / "predictions.json").unlink()
    (out / "masks/a").mkdir(parents=True)
    (out / "masks/a/img0.png").write_bytes(b"old")
    res = run(app, image_folder, "--out", out, "--models", models_dir, "--save-masks")
    assert res.exit_code == 2 and "masks/a/img0.png" in res.stderr
    assert (out / "masks/a/img0.png").read_bytes() == b"old" and not (out / "predictions.csv").exists()


def test_output_inside_input_folder_is_not_read(app, image_folder, models_dir):
    out = image_folder / "results"
    assert run(app, image_folder, "--out", out, "--models", models_dir, "--save-masks").exit_code == 0
    res = run(app, image_folder, "--out", out, "--models", models_dir, "--overwrite")
    assert res.exit_code == 0 and len(read_csv(out)) == 6


def test_interrupt_writes_no_results(app, image_folder, models_dir, tmp_path, monkeypatch):
    from manet_edge.pipeline import Pipeline

    def interrupted(self, files, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Pipeline, "run", interrupted)
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models_dir)
    assert res.exit_code == 130 and "interrupted" in res.stderr
    assert list((tmp_path / "o").iterdir()) == []


def test_failed_write_leaves_the_old_results_whole(app, image_folder, models_dir, tmp_path, monkeypatch):
    out = tmp_path / "o"
    assert run(app, image_folder, "--out", out, "--models", models_dir).exit_code == 0
    old = (out / "predictions.csv").read_bytes()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("manet_edge.fileutil.os.replace", full_disk)
    res = run(app, image_folder, "--out", out, "--models", models_dir, "--overwrite")
    assert res.exit_code == 2 and "No space left" in res.stderr
    assert (out / "predictions.csv").read_bytes() == old
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "predictions.json"]  # no temp files


def test_help_lists_the_options(app):
    res = CliRunner().invoke(app, ["infer", "--help"])
    assert res.exit_code == 0
    for opt in ("--out", "--backend", "--precision", "--models", "--batch", "--save-masks", "--save-overlays",
                "--overwrite", "--threads", "--streams"):
        assert opt in res.output


def test_internal_error_has_its_own_exit_code(app, image_folder, models_dir, tmp_path, monkeypatch):
    from manet_edge.pipeline import Pipeline

    def bug(self, files, **kw):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(Pipeline, "run", bug)
    res = run(app, image_folder, "--out", tmp_path / "o", "--models", models_dir)
    assert res.exit_code == 3 and "internal error: ZeroDivisionError: oops" in res.stderr
