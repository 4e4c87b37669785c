"""manet_edge.stages: the stage hand-off written once, and every caller giving the same numbers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from manet_edge import stages
from manet_edge.config import PostprocessConfig
from manet_edge.errors import ModelError
from manet_edge.io import load_image
from manet_edge.pipeline import InputFile, Pipeline, PipelineConfig
from manet_edge.runtime.onnxrt import OnnxRuntimeRunner
from tests.conftest import SIZE, lung_template, save_png, xray


def _card(**kw):
    base = dict(input_size=SIZE, in_channels=1, normalisation="segmented_minmax_pm1", temperature=1.0)
    return SimpleNamespace(**{**base, **kw})


def test_seg_feed_repeats_channels_and_scales_to_unit_range():
    img = xray((80, 70)).astype(np.float32) * 3 + 7
    one = stages.seg_feed(img, _card())
    three = stages.seg_feed(img, _card(in_channels=3))
    assert one.shape == (1, SIZE, SIZE) and three.shape == (3, SIZE, SIZE)
    assert one.min() == 0.0 and one.max() == 1.0
    np.testing.assert_array_equal(three[2], one[0])


def test_mask_from_logits_cleans_and_flags():
    post = PostprocessConfig()
    lungs = stages.mask_from_logits(lung_template(SIZE)[None], post)
    assert lungs.mask.dtype == bool and not lungs.empty and 0.1 < lungs.lung_fraction < 0.4
    empty = stages.mask_from_logits(lung_template(SIZE, "empty"), post)
    assert empty.empty and empty.lung_fraction == 0.0 and empty.flags == ("empty_mask",)
    full = stages.mask_from_logits(lung_template(SIZE, "full"), post)
    assert "lung_fraction_high" in full.flags


def test_cls_feed_is_the_same_from_the_early_small_copy():
    img = xray((200, 180))
    mask = stages.mask_from_logits(lung_template(SIZE), PostprocessConfig()).mask
    card = _card(input_size=32, in_channels=3)
    a_img, a_mask = stages.cls_feed(img, mask, card)
    b_img, b_mask = stages.cls_feed(stages.cls_image(img, card), mask, card)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert a_img.shape == (3, 32, 32) and a_mask.shape == (1, 32, 32)
    assert a_img[:, a_mask[0] == 0].max() == -1.0  # outside the lungs is blanked
    assert set(np.unique(a_mask)) <= {0.0, 1.0}
    assert stages.cls_batch([(a_img, a_mask)] * 2, ("image",)).keys() == {"image"}
    assert stages.cls_batch([(a_img, a_mask)] * 2, ("image", "mask"))["mask"].shape == (2, 1, 32, 32)


def test_probabilities_use_the_card_temperature():
    logits = np.array([[2.0, 0.0, -1.0, 0.5, 0.0]], np.float32)
    p1 = stages.probabilities(logits, _card())
    p2 = stages.probabilities(logits, _card(temperature=2.0))
    np.testing.assert_allclose(p1.sum(), 1.0)
    assert p2.max() < p1.max()
    np.testing.assert_allclose(p2, stages.softmax(logits / 2.0))


def test_postprocess_config_refuses_a_bad_card():
    with pytest.raises(ModelError, match="segmenter model card: bad 'postprocess'"):
        stages.postprocess_config(SimpleNamespace(postprocess={"no_such_key": 1}, mask_threshold=0.5))


def test_pipeline_quantize_and_stage_bench_agree_with_the_stage_functions(tmp_path, seg_model, cls_model):
    from manet_edge.benchmarks.pipeline_stages import stage_times
    from manet_edge.export.quantize import segmented_inputs

    path = save_png(tmp_path / "a.png", xray((90, 100), seed=3))
    seg, cls = OnnxRuntimeRunner(seg_model).activate(), OnnxRuntimeRunner(cls_model).activate()
    image = load_image(path)
    logits = seg.infer({"image": stages.seg_feed(image, seg.card)[None]})["logits"][0]
    lung = stages.mask_from_logits(logits, stages.postprocess_config(seg.card))
    feed = stages.cls_batch([stages.cls_feed(image, lung.mask, cls.card)], cls.input_names)
    want = stages.probabilities(cls.infer(feed)["logits"], cls.card)[0]

    calib = next(segmented_inputs([path], seg_model, cls.card.input_size))
    np.testing.assert_array_equal(calib["image"], feed["image"])
    np.testing.assert_array_equal(calib["mask"], feed["mask"])

    res = stage_times(seg, cls, [path], runs=1, warmup=0)
    assert res["not_classified"] == 0 and res["images"] == 1

    with Pipeline(seg, cls, PipelineConfig()) as pipe:
        row = pipe.run([InputFile(path, "a.png")])[0]
    assert row.ok
    np.testing.assert_allclose(row.probabilities, want, rtol=0, atol=1e-7)
    assert row.lung_fraction == lung.lung_fraction
