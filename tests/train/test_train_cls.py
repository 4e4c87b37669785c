"""Stage 2 end to end on tiny synthetic data: cache of predicted masks, training, eval, Grad-CAM."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from manet_edge.config import SegModelConfig
from manet_edge.datasets import find_cls_items
from manet_edge.train.checkpoint import load_checkpoint, save_checkpoint
from manet_edge.train.cls import class_weights, segment_items, train_classifier
from manet_edge.train.dist import DistInfo
from manet_edge.train.evaluate import aggregate_runs, eval_classifier, runs_table
from manet_edge.train.loop import preset


@pytest.fixture()
def segmenter_ckpt(tmp_path):
    """An untrained but valid segmenter checkpoint (threshold 0 keeps the masks non-empty)."""
    from manet_edge.config import to_dict
    from manet_edge.models.unet import create_segmenter

    torch.manual_seed(0)
    cfg = SegModelConfig(decoder_channels=(16, 16, 8, 8), image_size=64)
    model = create_segmenter(cfg)
    path = tmp_path / "seg.pt"
    save_checkpoint({"kind": "seg", "model_config": to_dict(cfg), "train_config": {}, "epoch": 0, "metrics": {},
                     "postprocess": {"threshold": 0.0, "min_object_fraction": 0.0, "keep_largest": 0},
                     "state_dict": model.state_dict()}, path)
    return path


def test_segment_items_is_cached_and_binary(cls_root, segmenter_ckpt, tmp_path):
    items = find_cls_items(cls_root)[:6]
    x, m = segment_items(cls_root, items, segmenter_ckpt, 32, cache_dir=tmp_path / "cache", quiet=True)
    assert x.shape == m.shape == (6, 1, 32, 32)
    assert set(np.unique(m)) <= {0.0, 1.0} and x.min() >= 0 and x.max() <= 1
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    x2, m2 = segment_items(cls_root, items, segmenter_ckpt, 32, cache_dir=tmp_path / "cache", quiet=True)
    assert np.array_equal(m, m2) and np.array_equal(x, x2)  # the cache returns exactly what was computed
    x3, _ = segment_items(cls_root, items[:3], segmenter_ckpt, 32, cache_dir=tmp_path / "cache", quiet=True)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 and len(x3) == 3


def test_exported_segmenter_gives_the_checkpoints_masks(cls_root, segmenter_ckpt, tmp_path):
    """``--segmenter`` may be an exported .onnx (the bundled one): it runs on ONNX Runtime with its
    card's clean-up and gives the masks its checkpoint gives."""
    from manet_edge.export.onnx import export_onnx, source_from_checkpoint

    from manet_edge.io import load_image
    from manet_edge.preprocess import seg_input
    from manet_edge.train.checkpoint import build_model_from_checkpoint

    items = find_cls_items(cls_root)[:6]
    ck = load_checkpoint(segmenter_ckpt)
    with torch.no_grad():  # an untrained net: threshold at its median probability, so half is "lung"
        x = torch.from_numpy(seg_input(load_image(cls_root / items[0].path), 64)[None])
        median = float(torch.sigmoid(build_model_from_checkpoint(ck)(x)).median())
    ck["postprocess"] = {"threshold": median, "min_object_fraction": 0.0, "keep_largest": 0}
    save_checkpoint(ck, tmp_path / "seg_median.pt")
    onnx_path = export_onnx(source_from_checkpoint(tmp_path / "seg_median.pt"), tmp_path / "segmenter.onnx").path
    x_pt, m_pt = segment_items(cls_root, items, tmp_path / "seg_median.pt", 32, quiet=True)
    x_ox, m_ox = segment_items(cls_root, items, onnx_path, 32, cache_dir=tmp_path / "cache", quiet=True)
    assert np.array_equal(x_pt, x_ox) and 0 < m_ox.mean() < 1
    assert np.mean(m_pt != m_ox) < 1e-3  # float rounding may flip a pixel at the threshold
    cls_onnx = tmp_path / "not_a_segmenter.onnx"
    from manet_edge.export.onnx import source_from_name

    export_onnx(source_from_name("cls", "resnet18", size=32), cls_onnx)
    with pytest.raises(ValueError, match="expected a segmenter"):
        segment_items(cls_root, items, cls_onnx, 32, quiet=True)


def test_old_bottleneck_ma_checkpoints_are_refused(tmp_path):
    """resnet50-ma moved its MA site to the 3x3 conv: weights trained with the old site would run a
    different network, so their checkpoints (no zoo record) are refused with the reason."""
    from manet_edge.config import ClsModelConfig, to_dict
    from manet_edge.errors import ModelError
    from manet_edge.models import create_model
    from manet_edge.train.checkpoint import build_model_from_checkpoint, zoo_record

    def ckpt(name, **extra):
        cfg = ClsModelConfig(name=name, image_size=64)
        return {"kind": "cls", "model_config": to_dict(cfg), "state_dict": create_model(name).state_dict(), **extra}

    with pytest.raises(ModelError, match="3x3 conv"):
        build_model_from_checkpoint(ckpt("resnet50-ma"))
    assert build_model_from_checkpoint(ckpt("resnet50-ma", zoo=zoo_record())) is not None
    assert build_model_from_checkpoint(ckpt("resnet50")) is not None  # no MA: nothing moved
    assert build_model_from_checkpoint(ckpt("resnet18-ma")) is not None  # basic blocks: nothing moved


def test_class_weights_favour_scarce_class():
    y = np.array([0] * 8 + [1] * 2)
    w = class_weights(y, 5)
    assert np.isclose(w[1], 4 * w[0]) and w[2] == 0 and np.isclose(w[:2].mean(), 1.0)
    s = class_weights(y, 5, power=0.5)  # --balance sqrt: milder
    assert np.isclose(s[1], 2 * s[0]) and s[2] == 0 and np.isclose(s[:2].mean(), 1.0)


def test_train_eval_and_aggregate(cls_root, segmenter_ckpt, tmp_path):
    torch.set_num_threads(1)
    reports = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        cfg = preset("cls-cpu", epochs=1, batch_size=8, image_size=32, seed=seed, max_steps_per_epoch=2)
        best = train_classifier(cls_root, segmenter_ckpt, "resnet18-ma", out, cfg, DistInfo(),
                                splits_path=tmp_path / "splits.json", cache_dir=tmp_path / "cache", quiet=True)
        assert 0.0 <= best["score"] <= 1.0
        ck = load_checkpoint(out / "best.pt")
        assert ck["classes"] == ["normal", "covid", "tb", "bacterial", "viral"]
        assert ck["model_config"]["name"] == "resnet18-ma" and ck["train_config"]["seed"] == seed
        assert ck["zoo"] == {"bottleneck_ma_site": "conv2"}
        reports.append(eval_classifier(out / "best.pt", cls_root, tmp_path / "splits.json", "test", cache_dir=tmp_path / "cache"))
    r = reports[0]
    cm = np.array(r["confusion_matrix"])
    assert cm.sum() == r["n"] and abs(r["accuracy"] - np.trace(cm) / cm.sum()) < 1e-12
    agg = aggregate_runs(reports)
    assert [x["seed"] for x in agg["resnet18-ma"]["runs"]] == [0, 1]
    assert abs(agg["resnet18-ma"]["mean"] - np.mean([x["accuracy"] for x in reports])) < 1e-12
    assert "resnet18-ma" in runs_table(agg)


def test_gradcam_cli_reports_inside_fraction(cls_root, segmenter_ckpt, tmp_path):
    import typer

    from manet_edge.commands import gradcam as gradcam_cmd

    torch.set_num_threads(1)
    cfg = preset("cls-cpu", epochs=1, batch_size=8, image_size=64, max_steps_per_epoch=1)
    train_classifier(cls_root, segmenter_ckpt, "resnet18", tmp_path / "r", cfg, DistInfo(),
                     splits_path=tmp_path / "splits.json", cache_dir=tmp_path / "cache", quiet=True)
    app = typer.Typer()
    gradcam_cmd.register(app)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    res = CliRunner().invoke(app, ["gradcam", str(tmp_path / "r/best.pt"), str(tmp_path / "r/last.pt"), "--data",
                                   str(cls_root), "--splits", str(tmp_path / "splits.json"), "--out", str(tmp_path / "gc"),
                                   "--cache", str(tmp_path / "cache"), "--overlays", "2"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "gc/gradcam.json").read_text())
    assert list(result) == ["resnet18 seed 0", "resnet18 seed 0 (r)"]  # same model and seed: kept apart
    assert all(0.0 <= e["inside_lung_fraction_mean"] <= 1.0 for e in result.values())
    assert len(list((tmp_path / "gc").rglob("*.png"))) == 4


def test_inside_fraction():
    from manet_edge.train.gradcam import inside_fraction

    heat = np.zeros((4, 4))
    heat[0, 0], heat[3, 3] = 3.0, 1.0
    mask = np.zeros((4, 4))
    mask[0, 0] = 1
    assert inside_fraction(heat, mask) == 0.75


def test_optimizer_choices_and_label_smoothing():
    """adamw decouples its weight decay; an unknown optimizer names the choices; the presets keep
    plain cross-entropy unless label smoothing is asked for."""
    from manet_edge.errors import ManetEdgeError
    from manet_edge.train.loop import make_optimizer

    net = torch.nn.Linear(3, 2)
    opt = make_optimizer(net, preset("cls-cpu", optimizer="adamw", weight_decay=0.05, lr=1e-3))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.05
    assert isinstance(make_optimizer(net, preset("cls-cpu")), torch.optim.SGD)
    with pytest.raises(ManetEdgeError, match="adam, adamw or sgd"):
        make_optimizer(net, preset("cls-cpu", optimizer="lion"))
    assert preset("cls-cpu").label_smoothing == 0.0 and preset("cls-cpu", label_smoothing=0.1).label_smoothing == 0.1


def test_runs_are_aggregated_per_model_and_recipe():
    """Table 2 rows: seeds of one recipe are averaged; another recipe of the same model is its own row,
    named by the settings that differ."""
    def rep(model, seed, acc, **recipe):
        base = {"epochs": 60, "image_size": 128, "balance": "loss", **recipe}
        return {"model": model, "seed": seed, "accuracy": acc, "per_class": {"covid": {"recall": 1.0}}, "recipe": base}

    agg = aggregate_runs([rep("resnet18-ma", 0, 0.70), rep("resnet18-ma", 1, 0.80),
                          rep("resnet18-ma", 0, 0.75, image_size=192), rep("resnet18", 0, 0.60)])
    assert set(agg) == {"resnet18-ma (image_size=128)", "resnet18-ma (image_size=192)", "resnet18"}
    assert agg["resnet18-ma (image_size=128)"]["mean"] == pytest.approx(0.75)
    assert [r["seed"] for r in agg["resnet18-ma (image_size=128)"]["runs"]] == [0, 1]
    assert "resnet18-ma (image_size=192)" in runs_table(agg)


def test_source_hold_out_bf16_and_calibration(cls_root, segmenter_ckpt, tmp_path):
    """--exclude-sources keeps a source out of train and val; eval --sources tests on it; the
    checkpoint carries a validation-fitted temperature and its normalisation; bf16 autocast trains."""
    from PIL import Image

    for i in range(6):  # a second normal source, to hold out
        img = np.asarray(Image.open(next((cls_root / "cls/normal").glob("*.png"))))
        Image.fromarray(img).save(cls_root / "cls/normal" / f"cxrdb_n{i}.png")
    torch.set_num_threads(1)
    out = tmp_path / "loso"
    cfg = preset("cls-cpu", epochs=1, batch_size=8, image_size=32, max_steps_per_epoch=2, amp="bf16",
                 normalisation="lung_equalize", augment="robust", exclude_sources="normal:cxrdb")
    train_classifier(cls_root, segmenter_ckpt, "resnet18-ma", out, cfg, DistInfo(), splits_path=tmp_path / "splits.json",
                     cache_dir=tmp_path / "cache", quiet=True)
    ck = load_checkpoint(out / "best.pt")
    assert ck["normalisation"] == "lung_equalize" and ck["train_config"]["exclude_sources"] == "normal:cxrdb"
    assert ck["calibration"]["fitted_on"] == "val" and ck["calibration"]["temperature"] > 0
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert hist[0]["amp"] == "bf16"
    rep = eval_classifier(out / "best.pt", cls_root, tmp_path / "splits.json", cache_dir=tmp_path / "cache",
                          sources="normal:cxrdb")
    assert rep["n"] == 6 and set(rep["per_source"]) == {"normal/cxrdb", "*/cxrdb"}
    assert rep["calibration"]["temperature"] == ck["calibration"]["temperature"]
    assert set(rep["roc_auc"]) == set(rep["classes"]) and "sensitivity" in rep["sens_spec"]["normal"]
