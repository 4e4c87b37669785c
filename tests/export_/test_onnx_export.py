"""torch -> ONNX: contract I/O, dynamic batch, model card, checker, parity (tiny zoo models, 32-64 px)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from manet_edge import CLASSES  # noqa: E402
from manet_edge.export.onnx import ExportOptions, build_onnx, export_onnx, source_from_checkpoint, source_from_name  # noqa: E402
from manet_edge.export.rules.functions import MA_OP, count_ma_nodes  # noqa: E402
from manet_edge.export.verify import input_sets, randomize_like_trained, run_ort, run_torch, verify_export  # noqa: E402
from manet_edge.metadata import read_onnx_card  # noqa: E402


@pytest.fixture(scope="module")
def r18ma():
    src = source_from_name("cls", "resnet18-ma", size=64)
    randomize_like_trained(src.model, size=64)
    model, result = build_onnx(src)
    return src, model, result


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_classifier_signature_card_and_checker(r18ma):
    src, model, result = r18ma
    assert [vi.name for vi in model.graph.input] == ["image", "mask"]
    assert [vi.name for vi in model.graph.output] == ["logits", "features"]  # --heatmap-output (default)
    assert _dims(model.graph.input[0]) == ["N", 1, 64, 64] and _dims(model.graph.input[1]) == ["N", 1, 64, 64]
    assert _dims(model.graph.output[0])[0] == "N"
    assert any(i.domain == "" and i.version >= 17 for i in model.opset_import)
    onnx.checker.check_model(model, full_check=True)
    card = json.loads({p.key: p.value for p in model.metadata_props}["manet_edge.card"])
    assert card["kind"] == "cls" and card["model_name"] == "resnet18-ma" and card["mask_attention"] is True
    assert card["ma_op"] == "fused" and card["input_size"] == 64 and tuple(card["classes"]) == CLASSES
    assert card["normalisation"] == "segmented_minmax_pm1" and card["precision"] == "fp32"
    # resnet18: stem + 8 blocks x 2 sites + 3 projection shortcuts = 20 MA multiplies; factor_mask_mul
    # merges each projection's multiply with its block's (same map): 17 fused nodes
    assert count_ma_nodes(model) == 17 and result.nodes[MA_OP] == 17 and "Mul" not in result.nodes
    assert "factor_mask_mul=3" in result.rules


def test_dynamic_batch_and_parity(r18ma):
    src, model, _ = r18ma
    for batch in (1, 3):
        for feed in input_sets("cls", 64, batch=batch).values():
            ref = run_torch(src.model, feed)
            assert np.abs(ref).max() > 1.0  # trained-like logits, not two near-zero tensors
            np.testing.assert_allclose(run_ort(model, feed), ref, rtol=0, atol=1e-4)


def test_verify_export_table_rows(r18ma):
    src, model, _ = r18ma
    report = verify_export(model, src.model, name="r18", kind="cls", size=64)
    checks = [r.check for r in report.rows]
    assert checks == ["torch vs ort (random)", "fused vs inline (random)", "torch vs ort (blobs)",
                      "fused vs inline (blobs)", "torch vs ort (real)", "fused vs inline (real)"]
    assert report.ok


def test_real_inputs_are_segmented_sample_xrays():
    """The ``real`` parity set: bundled sample X-rays through the bundled segmenter and the
    pipeline's own pre-processing: binary lung masks of plausible size, the image blanked outside."""
    from manet_edge.export.verify import real_inputs

    feed = real_inputs(64, channels=1, batch=2)
    assert feed is not None and feed["image"].shape == feed["mask"].shape == (2, 1, 64, 64)
    assert set(np.unique(feed["mask"])) == {0.0, 1.0} and 0.1 < feed["mask"].mean() < 0.6
    assert np.all(feed["image"][feed["mask"] == 0] == -1.0)


def test_openvino_runner_runs_the_fused_export_like_onnxruntime(r18ma, tmp_path):
    """The product's OpenVINO runner loads the fused export (its conversion extension) and matches ORT."""
    pytest.importorskip("openvino")
    from manet_edge.export.onnx import save_onnx
    from manet_edge.runtime.onnxrt import OnnxRuntimeRunner
    from manet_edge.runtime.openvino import OpenVINORunner

    _, model, _ = r18ma
    path = save_onnx(model, tmp_path / "classifier.onnx")
    feed = input_sets("cls", 64, batch=2)["blobs"]
    with OnnxRuntimeRunner(path, threads=1) as a, OpenVINORunner(path, threads=1) as b:
        assert b.card.ma_op == "fused" and b.input_names == ["image", "mask"]
        ref, got = a.infer(feed)["logits"], b.infer(feed)["logits"]
    assert np.abs(ref).max() > 1.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_resnet50_bottleneck_sites(tmp_path):
    """resnet50-ma: one MaskAttentionMul after the ReLU of the stem and of every bottleneck's 3x3 conv,
    on the block's narrow width; no multiply left on the wide residual path. torch, ORT and OpenVINO
    agree."""
    from manet_edge.export.onnx import save_onnx

    src = source_from_name("cls", "resnet50-ma", size=32)
    randomize_like_trained(src.model, size=32)
    model, result = build_onnx(src)
    assert result.nodes[MA_OP] == 17 and count_ma_nodes(model) == 17 and "Mul" not in result.nodes
    assert "factor_mask_mul=0, relu_before_mask_mul=17, fuse_mask_mul=17" in result.rules
    widths = sorted({n.attribute[0].i for n in model.graph.node if n.op_type == MA_OP})
    assert widths == [64, 128, 256, 512]  # the stem's and the bottlenecks' 3x3 widths, never the 4x-wide sums
    feed = input_sets("cls", 32, batch=2)["blobs"]
    ref = run_torch(src.model, feed)
    np.testing.assert_allclose(run_ort(model, feed), ref, rtol=0, atol=1e-4)
    try:
        from manet_edge.runtime.openvino import OpenVINORunner, conversion_extensions

        conversion_extensions()
    except ImportError:  # openvino is optional
        return
    with OpenVINORunner(save_onnx(model, tmp_path / "r50.onnx"), threads=1) as ov_runner:
        np.testing.assert_allclose(ov_runner.infer(feed)["logits"], ref, rtol=0, atol=1e-4)


def test_inline_form_and_plain_model_keep_mask_input(tmp_path):
    src = source_from_name("cls", "resnet18", size=32)
    result = export_onnx(src, tmp_path / "plain.onnx")
    model = onnx.load(str(result.path))
    assert [vi.name for vi in model.graph.input] == ["image", "mask"]
    card = read_onnx_card(str(result.path))
    assert card.mask_attention is False and card.ma_op == "none"
    ma = source_from_name("cls", "resnet18-ma", size=32)
    inline, res = build_onnx(ma, ExportOptions(ma_op="inline"))
    assert count_ma_nodes(inline) == 0 and not inline.functions and res.card.ma_op == "inline"


def test_checkpoint_source_hash_and_size(tmp_path):
    from manet_edge.config import ClsModelConfig, to_dict
    from manet_edge.train.checkpoint import file_sha256, save_checkpoint

    src = source_from_name("cls", "resnet18-ma", size=32)
    ckpt = {"kind": "cls", "model_config": to_dict(ClsModelConfig(name="resnet18-ma", image_size=32)),
            "train_config": {}, "state_dict": src.model.state_dict(), "epoch": 1, "classes": list(CLASSES),
            "metrics": {}}
    path = tmp_path / "cls.pt"
    save_checkpoint(ckpt, path)
    loaded = source_from_checkpoint(path)
    assert loaded.input_size == 32 and loaded.model_name == "resnet18-ma"
    result = export_onnx(loaded, tmp_path / "classifier.onnx")
    assert result.card.source_checkpoint_sha256 == file_sha256(path)


def test_segmenter_export_card(tmp_path):
    src = source_from_name("seg", "default", size=64)
    result = export_onnx(src, tmp_path / "segmenter.onnx")
    card = read_onnx_card(str(result.path))
    assert card.kind == "seg" and card.normalisation == "minmax01" and card.ma_op == "none"
    assert card.postprocess["threshold"] == card.mask_threshold == 0.5
    model = onnx.load(str(result.path))
    assert [vi.name for vi in model.graph.input] == ["image"] and _dims(model.graph.input[0]) == ["N", 1, 64, 64]
    feed = input_sets("seg", 64)["random"]
    np.testing.assert_allclose(run_ort(model, feed), run_torch(src.model, feed), atol=1e-4)


def test_bad_options_are_named_errors():
    from manet_edge.errors import BadInputError

    with pytest.raises(BadInputError, match="opset"):
        ExportOptions(opset=13)
    with pytest.raises(BadInputError, match="ma-op"):
        ExportOptions(ma_op="plugin")
    with pytest.raises(BadInputError, match="segmenter"):
        source_from_name("seg", "not-an-encoder", size=32)


def _lung_batch(n: int = 2, size: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    mask = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        for cx in (0.3 + 0.03 * i, 0.7):
            mask[i, 0] += ((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2 <= 1
    image = rng.uniform(-1, 1, (n, 1, size, size)).astype(np.float32) * np.maximum(mask, 0.2)
    return image.astype(np.float32), np.clip(mask, 0, 1)


def test_features_output_matches_torch_and_cam_matches_gradcam(r18ma):
    """The exported 'features' output is torch's last feature map; the runtime's CAM of it is the
    torch Grad-CAM of `manet-edge gradcam` at the last block (GAP + linear head: the same map)."""
    pytest.importorskip("pytorch_grad_cam")
    from manet_edge.heatmap import class_activation_map, head_weights, heat_inside, heat_map
    from manet_edge.export.verify import ort_session
    from manet_edge.train.gradcam import gradcam, inside_fraction

    src, model, result = r18ma
    assert result.card.extra["heatmap"]["output"] == "features"
    image, mask = _lung_batch()
    logits, feats = ort_session(model).run(["logits", "features"], {"image": image, "mask": mask})
    with torch.no_grad():
        want = src.model.forward_features(torch.from_numpy(image), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(feats, want, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.onnx"
        onnx.save(model, str(path))
        w, b = head_weights(path, result.card.extra)
    for n in range(len(image)):
        k = int(np.argmax(logits[n]))
        heat = heat_map(class_activation_map(feats[n], w, k), 64)
        gc, gk = gradcam(src.model, torch.from_numpy(image[n:n + 1]), torch.from_numpy(mask[n:n + 1]))
        assert gk == k
        # Grad-CAM's channel weights are W[k] / hw: the same map up to scale (both up-sampled bilinearly)
        assert np.corrcoef(heat.ravel(), gc.ravel())[0, 1] > 0.97
        assert heat_inside(heat, mask[n, 0]) == pytest.approx(inside_fraction(gc, mask[n, 0]), abs=0.05)


def test_no_heatmap_output_when_asked(r18ma):
    src, _, _ = r18ma
    model, result = build_onnx(src, ExportOptions(heatmap_output=False))
    assert [vi.name for vi in model.graph.output] == ["logits"] and "heatmap" not in result.card.extra
