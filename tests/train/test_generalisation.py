"""Splits v2, source hold-out, the shared stage-2 normalisation, calibration, clinical metrics, bf16 training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from manet_edge.calibration import expected_calibration_error, fit_temperature, reliability_bins, softmax_t
from manet_edge.datasets import Item, load_splits, make_joint_splits, matches_source, parse_source_spec
from manet_edge.errors import ManetEdgeError, ModelError
from manet_edge.metadata import ModelCard
from manet_edge.preprocess import cls_input, lung_equalized, normalise_segmented
from manet_edge.train.metrics import proportion_ci, roc_auc_ovr, sensitivity_specificity

REPO = Path(__file__).resolve().parents[2]


def _items():
    cls, seg = [], []
    for i in range(60):
        src, label = [("kermany", "normal"), ("cxrdb", "normal"), ("tbx11k", "tb")][i % 3]
        pid = f"{src}:p{i // 2}" if src != "cxrdb" else ""
        cls.append(Item(path=f"cls/{label}/{src}_{i}.png", label=label, patient_id=pid, source=src))
        if src == "kermany":  # the seg image is a copy of the cls film of the same name
            seg.append(Item(path=f"seg/images/{src}_{i}.png", mask=f"seg/masks/{src}_{i}.png", label=label,
                            patient_id=pid, source=src))
    for i in range(20):
        seg.append(Item(path=f"seg/images/quex_{i}.png", mask=f"seg/masks/quex_{i}.png", label="covid", source="quex"))
    return cls, seg


def test_joint_splits_keep_a_film_in_one_split_for_both_tasks():
    cls, seg = _items()
    cs, ss = make_joint_splits(cls, seg, seed=0)
    assert make_joint_splits(cls, seg, seed=0) == (cs, ss) and make_joint_splits(cls, seg, seed=1) != (cs, ss)
    where_cls = {Path(p).name: s for s, ps in cs.items() for p in ps}
    for s, ps in ss.items():
        for p in ps:
            if Path(p).name in where_cls:
                assert where_cls[Path(p).name] == s, p
    assert sorted(p for ps in cs.values() for p in ps) == sorted(it.path for it in cls)
    by_pid = {}
    for it in cls:
        if it.patient_id:
            split = next(s for s, ps in cs.items() if it.path in ps)
            assert by_pid.setdefault(it.patient_id, split) == split
    for src in ("kermany", "cxrdb", "tbx11k"):  # stratified by source: every source reaches every split
        assert all(any(f"/{src}_" in p for p in cs[s]) for s in ("train", "val", "test")), src


def test_committed_v2_splits_and_v1_files_stay_readable():
    v2 = json.loads((REPO / "splits/cls.json").read_text())
    assert v2["version"] == 2 and len(v2["train"]) + len(v2["val"]) + len(v2["test"]) == 1781
    assert set(v2["train"]).isdisjoint(v2["test"])
    seg_v2 = load_splits(REPO / "splits/seg.json")
    cls_test = {Path(p).name for p in v2["test"]}
    assert not cls_test & {Path(p).name for p in seg_v2["train"]}  # no classifier test film trained the segmenter
    v1 = load_splits(REPO / "splits/v1/cls.json")
    assert len(v1["train"]) == 671 and len(v1["test"]) == 82


def test_source_spec():
    spec = parse_source_spec("normal:cxrdb, tb:shenzhen+montgomery,*:ieee")
    assert spec == [("normal", "cxrdb"), ("tb", "shenzhen"), ("tb", "montgomery"), ("*", "ieee")]
    assert matches_source(Item("a", "tb", source="montgomery"), spec)
    assert not matches_source(Item("a", "covid", source="cxrdb"), spec)
    assert matches_source(Item("a", "covid", source="ieee"), spec)
    for bad in ("cxrdb", "flu:cxrdb"):
        with pytest.raises(ManetEdgeError):
            parse_source_spec(bad)


def test_lung_equalize_ignores_grey_level_transforms_and_blanks_outside():
    rng = np.random.default_rng(0)
    img = rng.random((96, 96)).astype(np.float32)
    mask = np.zeros_like(img)
    mask[10:80, 5:45] = 1
    a = lung_equalized(img, mask)
    assert a.min() >= -1 and a.max() <= 1 and np.all(a[mask == 0] == -1)
    inside = a[mask > 0]
    assert abs(float(inside.mean())) < 0.05  # equalised: lung values spread uniformly over [-1, 1]
    for f in (lambda x: x ** 2.2, lambda x: 0.2 + 0.5 * x, lambda x: np.sqrt(x)):  # gamma, window, LUT
        assert np.abs(lung_equalized(f(img).astype(np.float32), mask) - a)[mask > 0].mean() < 0.01
    # the paper's min-max is not invariant: this is what lung_equalize changes
    mm = normalise_segmented(img, mask)
    assert np.abs(normalise_segmented((img ** 2.2).astype(np.float32), mask) - mm)[mask > 0].mean() > 0.05
    assert np.all(lung_equalized(img, np.zeros_like(img)) == -1)


def test_cls_input_uses_the_named_normalisation():
    rng = np.random.default_rng(1)
    img = rng.random((200, 180)).astype(np.float32) * 4000
    mask = np.zeros((200, 180), bool)
    mask[30:170, 20:90] = True
    x_old, m = cls_input(img, mask, 64)
    x_eq, m2 = cls_input(img, mask, 64, "lung_equalize")
    assert np.array_equal(m, m2) and x_old.shape == x_eq.shape == (1, 64, 64)
    assert not np.allclose(x_old, x_eq)
    with pytest.raises(ValueError, match="unknown classifier normalisation"):
        cls_input(img, mask, 64, "zscore")


def test_model_card_checks_normalisation_and_temperature():
    card = ModelCard.from_json(json.dumps({"kind": "cls", "model_name": "m", "input_size": 64}))
    assert card.temperature == 1.0 and card.normalisation == "segmented_minmax_pm1"  # cards before calibration
    assert ModelCard(kind="cls", model_name="m", input_size=64, normalisation="lung_equalize", temperature=1.7).temperature == 1.7
    for bad in ({"temperature": 0}, {"temperature": "1.2"}, {"temperature": True}, {"normalisation": "zscore"}):
        with pytest.raises(ModelError):
            ModelCard(kind="cls", model_name="m", input_size=64, **bad)


def test_temperature_scaling_recovers_the_temperature_and_keeps_predictions():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4000, 5))
    true_t = 2.5
    p = softmax_t(logits, true_t)
    y = np.array([rng.choice(5, p=row) for row in p])
    t = fit_temperature(logits, y)
    assert abs(t - true_t) < 0.25
    assert np.array_equal(softmax_t(logits, t).argmax(1), logits.argmax(1))
    assert expected_calibration_error(softmax_t(logits, t), y) < expected_calibration_error(softmax_t(logits, 1.0), y)
    bins = reliability_bins(softmax_t(logits, t), y)
    assert sum(b["n"] for b in bins) == len(y)


def test_pipeline_softmax_applies_the_cards_temperature():
    from manet_edge.pipeline import softmax

    x = np.array([[2.0, 0.0, -1.0]])
    assert np.allclose(softmax(x, 2.0), softmax_t(x, 2.0)) and not np.allclose(softmax(x, 2.0), softmax(x))


def test_clinical_metrics():
    y = np.array([0] * 30 + [1] * 30)
    probs = np.zeros((60, 2))
    probs[:, 1] = np.r_[np.linspace(0, 0.4, 30), np.linspace(0.6, 1, 30)]
    probs[:, 0] = 1 - probs[:, 1]
    auc = roc_auc_ovr(y, probs, ("a", "b"))
    assert auc == {"a": 1.0, "b": 1.0}
    pred = probs.argmax(1)
    pred[:3] = 1  # three false positives for b
    ss = sensitivity_specificity(y, pred, ("a", "b"))
    assert ss["b"]["sensitivity"] == [1.0, 1.0, 1.0]
    est, lo, hi = ss["b"]["specificity"]
    assert est == pytest.approx(0.9) and lo < est < hi <= 1.0
    assert np.isnan(proportion_ci(np.array([]))[0])


def test_amp_auto_follows_the_cpu(monkeypatch):
    import manet_edge.train.amp as amp

    monkeypatch.setattr(amp, "has_native_bf16", lambda: False)
    assert amp.resolve_amp("auto") == "off" and amp.resolve_amp("bf16") == "bf16" and amp.resolve_amp("auto", "cuda") == "bf16"
    monkeypatch.setattr(amp, "has_native_bf16", lambda: True)
    assert amp.resolve_amp("auto") == "bf16" and amp.resolve_amp("off") == "off"
    with pytest.raises(ManetEdgeError):
        amp.resolve_amp("fp8")


def test_cpu_flags_decide_native_bf16():
    from manet_edge.cpu import describe, has_native_bf16

    assert has_native_bf16(frozenset({"avx512f", "amx_bf16"})) and has_native_bf16(frozenset({"avx512_bf16"}))
    assert not has_native_bf16(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    d = describe(frozenset({"avx2", "amx_int8"}))
    assert d["isa"] == ["avx2", "amx_int8"] and d["native_bf16"] is False


def test_robust_augment_changes_only_the_image():
    from manet_edge.train.augment import cls_augment

    torch.manual_seed(0)
    aug = cls_augment("robust")
    img = torch.rand(1, 48, 48)
    mask = torch.zeros(1, 48, 48)
    mask[:, 10:40, 8:30] = 1
    changed = 0
    for _ in range(8):
        out, m = aug(img, mask)
        assert out.shape == img.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
        changed += int(not torch.allclose(out, img))
    assert changed >= 6
    with pytest.raises(ValueError):
        cls_augment("heavy")


def test_segmenter_rebuilt_from_onnx_matches_it(tmp_path):
    """The bundled-style export (BatchNorm folded into the convs) back to torch, for fine-tuning."""
    from manet_edge.config import SegModelConfig
    from manet_edge.export.onnx import Source, export_onnx
    from manet_edge.models.unet import create_segmenter
    from manet_edge.train.from_onnx import segmenter_from_onnx

    torch.manual_seed(0)
    cfg = SegModelConfig(image_size=64)
    model = create_segmenter(cfg).eval()
    for mod in model.modules():  # non-trivial BatchNorm statistics, so folding matters
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
    path = export_onnx(Source("seg", model, "unet-resnet18", 64, postprocess={"threshold": 0.4}), tmp_path / "s.onnx").path
    rebuilt, rcfg, post = segmenter_from_onnx(path)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x), atol=1e-4)
    assert rcfg.image_size == 64 and post.threshold == 0.4


def test_pinned_files_land_in_test_with_their_patient():
    cls, seg = _items()
    cls.append(Item(path="cls/normal/kermany_second.png", label="normal", patient_id="kermany:p0", source="kermany"))
    pinned = ("kermany_0.png", "cxrdb_1.png")
    cs, ss = make_joint_splits(cls, seg, seed=0, pin_test=pinned)
    test_names = {Path(p).name for p in cs["test"]}
    assert set(pinned) <= test_names
    assert "kermany_second.png" in test_names  # same patient (kermany:p0) as kermany_0
    assert "kermany_0.png" in {Path(p).name for p in ss["test"]}  # and its seg copy too
    assert all(len(cs[s]) > 0 for s in ("train", "val", "test"))


def test_committed_splits_pin_the_bundled_samples_to_test():
    test = {Path(p).name for p in load_splits(REPO / "splits/cls.json")["test"]}
    samples = {p.name for p in (REPO / "manet_edge/assets/samples").glob("*.png")}
    assert samples and samples <= test
