"""The input-domain gate and class-activation maps (docs/trust.md), torch-free parts.

Tiny generated ONNX models (tests/conftest.py) and the bundled models and samples.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from manet_edge import checks
from manet_edge.assets import samples_dir
from manet_edge.heatmap import (FEATURES_OUTPUT, NoHeadError, add_feature_output, class_activation_map, find_head,
                                head_weights, heat_inside, heat_map, heatmap_overlay)
from manet_edge.io import load_image
from manet_edge.metadata import CARD_KEY, ModelCard, read_onnx_card
from manet_edge.ood import Gaussian, OodScorer, energy, roc_auc, thresholds, to_card
from manet_edge.ood_inputs import KINDS, MAKERS, TRANSFORMS, write_set

SAMPLES_DIR = samples_dir()
BUNDLED = Path(__file__).resolve().parents[2] / "manet_edge" / "assets" / "models"


def _with_card(path: Path, **extra) -> None:
    model = onnx.load(str(path))
    card = read_onnx_card(str(path))
    new = dataclasses.replace(card, extra={**card.extra, **extra})
    props = {p.key: p.value for p in model.metadata_props}
    props[CARD_KEY] = new.to_json()
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def _featured_models(folder: Path, synth, **card_extra) -> Path:
    """The tiny models, the classifier with the 'features' output (and ``card_extra`` in its card)."""
    synth.make_models_dir(folder)
    path = folder / "classifier.onnx"
    model = onnx.load(str(path))
    head = add_feature_output(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    _with_card(path, heatmap=head.to_card(), **card_extra)
    return folder


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _random_feed(n: int, size: int, *, seed: int, lung: float) -> dict[str, np.ndarray]:
    """A classifier feed: ``n`` random images in [-1, 1] and masks with about ``lung`` of their pixels set."""
    rng = np.random.default_rng(seed)
    return {"image": rng.uniform(-1, 1, (n, 1, size, size)).astype(np.float32),
            "mask": (rng.uniform(0, 1, (n, 1, size, size)) > 1.0 - lung).astype(np.float32)}


# -- heat maps ------------------------------------------------------------------------------------

def test_feature_output_gives_an_exact_cam(tmp_path, synth):
    models = _featured_models(tmp_path / "m", synth)
    cls = models / "classifier.onnx"
    assert find_head(onnx.load(str(cls))).features == "act"
    sess = _session(cls)
    assert [o.name for o in sess.get_outputs()] == ["logits", FEATURES_OUTPUT]
    feed = _random_feed(3, 64, seed=0, lung=0.7)
    logits, feats = sess.run(None, feed)
    w, b = head_weights(cls, read_onnx_card(str(cls)).extra)
    for n in range(3):
        for k in range(5):  # mean of the class map + bias = the logit (GAP + linear head)
            assert float(class_activation_map(feats[n], w, k).mean() + b[k]) == pytest.approx(float(logits[n, k]), abs=1e-4)
    # without the card entry the head is found in the graph
    w2, b2 = head_weights(cls, {})
    assert np.array_equal(w, w2) and np.array_equal(b, b2)


def test_no_head_is_refused(tmp_path, synth):
    seg = synth.make_segmenter(tmp_path / "s.onnx")
    with pytest.raises(NoHeadError):
        find_head(onnx.load(str(seg)))


def test_heat_map_and_fraction():
    cam = np.zeros((4, 4), np.float32)
    cam[1, 1] = 2.0
    cam[3, 3] = -5.0  # evidence against the class is not heat
    heat = heat_map(cam, 8)
    assert heat.shape == (8, 8) and heat.max() == pytest.approx(1.0) and heat.min() >= 0
    mask = np.zeros((8, 8))
    mask[:4, :4] = 1
    assert heat_inside(heat, mask) > 0.7  # bilinear up-sampling spreads a little heat out
    assert heat_inside(heat, 1 - mask) < 0.3
    assert heat_inside(np.zeros((8, 8)), mask) is None
    rgb = heatmap_overlay(np.full((8, 8), 100, np.uint8), heat, mask)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8 and (rgb[..., 0] != rgb[..., 2]).any()


def test_bundled_classifier_has_features_and_same_logits():
    cls = BUNDLED / "classifier.onnx"
    card = read_onnx_card(str(cls))
    assert card.extra["heatmap"]["output"] == FEATURES_OUTPUT
    sess = _session(cls)
    assert [o.name for o in sess.get_outputs()] == ["logits", FEATURES_OUTPUT]
    feed = _random_feed(2, 128, seed=1, lung=0.5)
    logits, feats = sess.run(None, feed)
    assert feats.shape == (2, 512, 4, 4)
    w, b = head_weights(cls, card.extra)
    cam_logits = np.array([[class_activation_map(f, w, k).mean() + b[k] for k in range(5)] for f in feats])
    np.testing.assert_allclose(cam_logits, logits, atol=1e-4)


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "predictions.csv", newline="") as fh:
        return {r["file"]: r for r in csv.DictReader(fh)}


def _infer(app, folder, out, *args):
    return CliRunner().invoke(app, ["infer", str(folder), "--out", str(out), "--no-progress", *map(str, args)])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_infer_save_heatmaps_on_the_bundled_samples(app, tmp_path, backend):
    res = _infer(app, SAMPLES_DIR, tmp_path / backend, "--save-heatmaps", "--backend", backend)
    assert res.exit_code == 0, res.output
    rows = _rows(tmp_path / backend)
    assert len(rows) == 10
    for name, r in rows.items():
        stem = Path(name).with_suffix("").as_posix()
        heat = np.load(tmp_path / backend / "heatmaps" / f"{stem}.npy")
        assert heat.shape == (128, 128) and 0 <= heat.min() and heat.max() == pytest.approx(1.0)
        assert (tmp_path / backend / "heatmaps" / f"{stem}.png").stat().st_size > 1000
        assert 0.2 < float(r["heat_in_lung"]) <= 1.0
        assert r["ood_score"] != ""
    doc = json.loads((tmp_path / backend / "predictions.json").read_text())
    assert all(isinstance(r["heat_in_lung"], float) for r in doc["rows"])


def test_heatmaps_agree_between_backends(app, tmp_path):
    for b in ("onnxruntime", "openvino"):
        assert _infer(app, SAMPLES_DIR, tmp_path / b, "--save-heatmaps", "--backend", b).exit_code == 0
    for npy in sorted((tmp_path / "onnxruntime" / "heatmaps").glob("*.npy")):
        a, b = np.load(npy), np.load(tmp_path / "openvino" / "heatmaps" / npy.name)
        assert np.abs(a - b).max() < 1e-3, npy.name
    ra, rb = _rows(tmp_path / "onnxruntime"), _rows(tmp_path / "openvino")
    for f in ra:
        assert abs(float(ra[f]["heat_in_lung"]) - float(rb[f]["heat_in_lung"])) < 1e-3
        assert abs(float(ra[f]["ood_score"]) - float(rb[f]["ood_score"])) < 1e-3


def test_save_heatmaps_needs_the_features_output(app, tmp_path, models_dir, image_folder):
    res = _infer(app, image_folder, tmp_path / "o", "--models", models_dir, "--save-heatmaps")
    assert res.exit_code == 2
    assert "--save-heatmaps needs a classifier with a 'features' output" in res.output


# -- out-of-distribution score ----------------------------------------------------------------------

def test_energy_and_auc():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    want = -np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(energy(logits), want)
    np.testing.assert_allclose(energy(logits, 2.0), -2 * np.log(np.exp(logits / 2).sum(axis=1)))
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 50), np.round(rng.normal(1, 1, 70), 1)
    a = np.round(a, 1)  # ties
    assert roc_auc(a, b) == pytest.approx(roc_auc_score(np.r_[np.zeros(50), np.ones(70)], np.r_[a, b]))


def test_mahalanobis_matches_the_full_covariance_and_separates():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    d = 6
    means = rng.normal(0, 3, (3, d))
    labels = np.repeat(np.arange(3), 100)
    x = means[labels] + rng.normal(0, 1, (300, d)) * np.linspace(0.5, 2, d)
    g = Gaussian.fit(x, labels, rank=d)  # rank capped at d-1: one direction by its mean eigenvalue
    full = Gaussian.fit(x, labels, rank=d - 1)
    assert np.allclose(g.distance(x), full.distance(x))
    centred = x - np.stack([x[labels == k].mean(0) for k in range(3)])[labels]
    prec = np.linalg.inv(LedoitWolf(assume_centered=True).fit(centred).covariance_)
    mu = np.stack([x[labels == k].mean(0) for k in range(3)])
    exact = np.min([np.einsum("ni,ij,nj->n", x - m, prec, x - m) for m in mu], axis=0)
    # the last eigen-direction is replaced by itself (its own mean): exact
    np.testing.assert_allclose(g.distance(x), exact, rtol=1e-4)
    far = rng.normal(0, 1, (50, d)) * 8 + 20
    assert roc_auc(g.distance(x), g.distance(far)) > 0.99
    # the card round trip gives the same scorer
    entry = to_card("mahalanobis", 10.0, 100.0, g, 1.0, {})
    s = OodScorer.from_card(json.loads(json.dumps(entry)))
    np.testing.assert_allclose(s.score(np.zeros((300, 3)), x), g.distance(x), rtol=1e-5)
    assert s.flags(5.0) == [] and s.flags(50.0) == ["out_of_distribution"] and s.flags(500.0) == ["not_chest_xray"]
    assert s.flags(float("nan")) == ["not_chest_xray"]


def test_thresholds():
    val = np.arange(100, dtype=float)
    thr, reject = thresholds(val, val)
    assert np.mean(val <= thr) == pytest.approx(0.95, abs=0.01)
    assert reject == pytest.approx(49.5 + 2 * (99 - 49.5))


def test_bundled_card_holds_a_fitted_score():
    card = read_onnx_card(str(BUNDLED / "classifier.onnx"))
    entry = card.extra["ood"]
    assert entry["method"] in ("mahalanobis", "energy") and entry["threshold"] < entry["reject"]
    assert entry["fit"]["train_films"] > 1000 and 0.93 <= entry["fit"]["val_tpr"] <= 0.97
    assert set(entry["fit"]["val_auc"]) == {"mahalanobis", "energy"}
    assert max(entry["fit"]["val_auc"].values()) == entry["fit"]["val_auc"][entry["method"]]


def test_ood_flags_and_rejection_in_a_run(app, tmp_path, synth, image_folder):
    """A card whose threshold is below every score flags every row; a reject threshold below every
    score makes every row an error (not a chest X-ray), with no prediction."""
    for name, thr, reject, want_status, want_flag in (
            ("flag", -1e9, 1e9, "ok", "out_of_distribution"), ("reject", -1e9, -1e8, "error", "not_chest_xray"),
            ("pass", 1e9, 1e10, "ok", None)):
        entry = {"method": "energy", "threshold": thr, "reject": reject, "temperature": 1.0}
        models = _featured_models(tmp_path / name, synth, ood=entry)
        res = _infer(app, image_folder, tmp_path / f"o_{name}", "--models", models)
        rows = _rows(tmp_path / f"o_{name}")
        assert rows and all(r["status"] == want_status for r in rows.values()), res.output
        for r in rows.values():
            flags = r["flags"].split(";") if r["flags"] else []
            assert (want_flag in flags) if want_flag else not [f for f in flags if "distribution" in f or "chest" in f]
            if want_status == "error":
                assert r["prediction"] == "" and "not a chest X-ray" in r["error"]
        assert res.exit_code == (1 if want_status == "error" else 0)


# -- photometric and DICOM checks ---------------------------------------------------------------

def test_dicom_tag_flags():
    assert checks.dicom_tag_flags("DX", "CHEST", "PA") == []
    assert checks.dicom_tag_flags("CR", None, "AP") == []
    assert checks.dicom_tag_flags("CT", "CHEST", None) == ["dicom_modality"]
    assert checks.dicom_tag_flags("DX", "KNEE", "AP") == ["dicom_body_part"]
    assert checks.dicom_tag_flags("DX", "chest", "LL") == ["dicom_lateral"]
    assert checks.dicom_tag_flags("DX", "", "LATERAL") == ["dicom_lateral"]


def test_dicom_not_a_chest_radiograph_is_an_error_row(app, tmp_path, synth, models_dir):
    import pydicom

    folder = tmp_path / "in"
    for name, tags in (("ok.dcm", {}), ("ct.dcm", {"Modality": "CT"}), ("knee.dcm", {"BodyPartExamined": "KNEE"}),
                       ("lat.dcm", {"ViewPosition": "LL", "BodyPartExamined": "CHEST"})):
        path = synth.make_dicom(folder / name, synth.xray(64, seed=3, bits=12))
        ds = pydicom.dcmread(path)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(path)
    res = _infer(app, folder, tmp_path / "o", "--models", models_dir)
    rows = _rows(tmp_path / "o")
    assert rows["ok.dcm"]["status"] == "ok" and rows["ok.dcm"]["flags"] == ""
    assert rows["ct.dcm"]["status"] == "error" and "dicom_modality" in rows["ct.dcm"]["flags"]
    assert rows["knee.dcm"]["status"] == "error" and "not a chest X-ray" in rows["knee.dcm"]["error"]
    assert rows["lat.dcm"]["status"] == "ok" and rows["lat.dcm"]["flags"] == "dicom_lateral"
    assert rows["lat.dcm"]["prediction"] != ""
    assert res.exit_code == 1
    assert checks.dicom_flags(folder / "ct.dcm") == ["dicom_modality"]
    assert checks.dicom_flags(Path(__file__)) == []


def test_polarity_on_the_bundled_samples():
    from manet_edge.preprocess import resize

    for p in sorted(SAMPLES_DIR.glob("*.png")):
        img = resize(load_image(p), 128)
        # every sample but one off-centre film (spine at a third of the width) reads positive
        if p.name != "ieee_d7f2ee0f.png":
            assert checks.polarity_score(img) > 0.1, p.name
        assert checks.polarity_score(img.max() - img) < -0.1 or p.name == "ieee_d7f2ee0f.png", p.name


def _two_lungs(h=100, w=100, taper=True) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    m = np.zeros((h, w), bool)
    for cx in (0.3, 0.7):
        half = (0.05 + 0.12 * (yy - 0.15) / 0.7) if taper else 0.12  # narrow apex, wide base
        m |= (np.abs(xx - cx) < half) & (yy > 0.15) & (yy < 0.85)
    return m


def test_geometry_flags():
    upright = _two_lungs()
    assert checks.geometry_flags(upright) == []
    assert checks.geometry_flags(np.rot90(upright)) == ["rotated"]
    assert checks.geometry_flags(np.flipud(upright)) == ["upside_down"]
    assert checks.geometry_flags(np.zeros((50, 50), bool)) == []


# -- generated inputs --------------------------------------------------------------------------

def test_generated_inputs(tmp_path):
    rng = np.random.default_rng(0)
    film = (load_image(SAMPLES_DIR / "kermany_IM-0117-0001.png")).astype(np.uint8)
    for k, make in MAKERS.items():
        a = make(rng, 64)
        assert a.shape[:2] == (64, 64) and a.dtype == np.uint8 and np.ptp(a) > 20, k
    for k, t in TRANSFORMS.items():
        a = t(film, rng)
        assert a.shape == film.shape and not np.array_equal(a, film), k
    written = write_set(tmp_path, [film], per_kind=2, seed=0)
    assert sorted(set(written.values())) == sorted(KINDS) and len(written) == 2 * len(KINDS)
    assert all((tmp_path / r).is_file() for r in written)
