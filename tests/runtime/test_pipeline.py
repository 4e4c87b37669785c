"""manet_edge.pipeline: folder walking, the stage hand-off, batching, flags policy, model checks."""

from __future__ import annotations

import numpy as np
import pytest

from manet_edge import CLASSES
from manet_edge.config import PostprocessConfig
from manet_edge.errors import BadInputError, ModelError
from manet_edge.pipeline import InputFile, Pipeline, PipelineConfig, sigmoid, softmax, walk_folder
from manet_edge.postprocess import clean_mask, lung_fraction
from manet_edge.preprocess import cls_input, seg_input
from manet_edge.runtime import create_runner


def _pipe(seg, cls, backend="onnxruntime", **cfg):
    return Pipeline(create_runner(seg, backend, threads=1), create_runner(cls, backend, threads=1),
                    PipelineConfig(**{"workers": 2, **cfg}))


def test_walk_folder_recursive_sorted_hidden_and_excluded(tmp_path):
    for rel in ("b/2.png", "a/1.png", "a/sub/0.png", "c.txt", ".hidden.png", ".git/x.png", "out/old.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    files = walk_folder(tmp_path, exclude=[tmp_path / "out"])
    assert [f.rel for f in files] == ["a/1.png", "a/sub/0.png", "b/2.png", "c.txt"]
    assert files[0].path == tmp_path / "a" / "1.png"


def test_unlistable_subfolder_is_reported(tmp_path, monkeypatch):
    import os

    (tmp_path / "locked").mkdir()
    (tmp_path / "ok.png").write_bytes(b"x")
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files = walk_folder(tmp_path)
    assert [(f.rel, f.error) for f in files] == [("locked/", "cannot list this folder: Permission denied"),
                                                 ("ok.png", "")]


def test_sigmoid_softmax_are_stable():
    assert np.all(np.isfinite(sigmoid(np.array([-1e4, 0, 1e4], np.float32))))
    p = softmax(np.array([[1000.0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert p[0, 0] == pytest.approx(1.0)


def test_pipeline_follows_the_stage_handoff(seg_model, cls_model, image_folder):
    """The pipeline's numbers equal the contract's steps done by hand, one image at a time."""
    from manet_edge.io import load_image

    files = walk_folder(image_folder)
    with _pipe(seg_model, cls_model, batch=3) as pipe:
        results = pipe.run(files)
        post = pipe.postprocess
        for f, r in zip(files, results):
            image = load_image(f.path)
            prob = sigmoid(pipe.seg.infer({"image": seg_input(image, 64)[None]})["logits"][0, 0])
            mask = clean_mask(prob, post)
            seg_img, m = cls_input(image, mask, 64)
            logits = pipe.cls.infer({"image": seg_img[None], "mask": m[None]})["logits"]
            np.testing.assert_allclose(r.probabilities, softmax(logits)[0], atol=1e-6)
            assert r.lung_fraction == pytest.approx(lung_fraction(mask))
            assert r.prediction == CLASSES[int(np.argmax(r.probabilities))]
    assert [r.file for r in results] == [f.rel for f in files]
    assert all(r.ok and 0.15 < r.lung_fraction < 0.4 and not r.flags for r in results)


@pytest.mark.parametrize("batch,workers,streams", [(1, 1, 1), (4, 2, 1), (16, 3, 1), (1, 1, 2), (4, 1, 3)])
def test_batching_workers_and_streams_do_not_change_results(seg_model, cls_model, image_folder, batch, workers,
                                                            streams):
    files = walk_folder(image_folder)
    with _pipe(seg_model, cls_model, batch=1, workers=1) as pipe:
        ref = pipe.run(files)
    with _pipe(seg_model, cls_model, batch=batch, workers=workers, streams=streams) as pipe:
        got = pipe.run(files)
        times = pipe.times.to_dict()
    for a, b in zip(ref, got):
        assert a.file == b.file and a.prediction == b.prediction
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert times["seg_infer"]["images"] == len(files)
    assert times["seg_infer"]["calls"] == -(-len(files) // batch)
    assert pipe.wall_s > 0


@pytest.mark.parametrize("streams", [1, 2])
def test_bad_files_become_error_rows_and_the_run_goes_on(seg_model, cls_model, image_folder, synth, streams):
    synth.write_bad_files(image_folder / "bad")
    files = walk_folder(image_folder)
    seen = []
    with _pipe(seg_model, cls_model, batch=4, streams=streams) as pipe:
        results = pipe.run(files, on_result=seen.append)
    assert len(results) == len(files) == len(seen)
    assert sorted(r.file for r in seen) == sorted(f.rel for f in files)
    assert [r.file for r in results] == [f.rel for f in files]
    bad = {r.file: r for r in results if r.file.startswith("bad/")}
    assert bad and all(r.status == "error" and r.error and r.probabilities is None for r in bad.values())
    assert not any(str(image_folder) in r.error for r in bad.values())  # the file is in its own column
    assert "blank" in bad["bad/blank.png"].error
    assert all(r.ok for r in results if not r.file.startswith("bad/"))


def test_unusual_modes_and_dicom_are_classified(seg_model, cls_model, tmp_path, synth):
    synth.write_mode_files(tmp_path)
    with _pipe(seg_model, cls_model, batch=4) as pipe:
        results = pipe.run(walk_folder(tmp_path))
    assert all(r.ok for r in results), [(r.file, r.error) for r in results if not r.ok]


@pytest.mark.parametrize("variant,status,flag", [("empty", "error", "empty_mask"),
                                                 ("small", "ok", "lung_fraction_low"),
                                                 ("full", "ok", "lung_fraction_high")])
def test_implausible_masks_are_flagged(tmp_path, cls_model, image_folder, synth, variant, status, flag):
    seg = synth.make_segmenter(tmp_path / "seg.onnx", variant=variant)
    with _pipe(seg, cls_model, batch=2) as pipe:
        results = pipe.run(walk_folder(image_folder))
    for r in results:
        assert r.status == status and flag in r.flags
        if status == "error":
            assert r.prediction == "" and r.probabilities is None and "no lung" in r.error
            assert r.lung_fraction == 0.0
        else:
            assert r.prediction in CLASSES


def test_postprocess_config_comes_from_the_card(tmp_path, cls_model, image_folder, synth):
    seg = synth.make_segmenter(tmp_path / "seg.onnx", postprocess={"min_lung_fraction": 0.5, "threshold": 0.5})
    with _pipe(seg, cls_model) as pipe:
        assert pipe.postprocess == PostprocessConfig(min_lung_fraction=0.5)
        results = pipe.run(walk_folder(image_folder))
    assert all("lung_fraction_low" in r.flags and r.ok for r in results)
    with pytest.raises(ModelError, match="postprocess"):  # a card is checked when it is made (and read)
        synth.make_segmenter(tmp_path / "bad.onnx", postprocess={"thresold": 0.5})


def test_incompatible_models_are_refused(tmp_path, seg_model, cls_model, synth):
    with pytest.raises(ModelError, match="given as the segmenter, but its model card says it is a classifier"):
        _pipe(cls_model, seg_model).activate()
    wrong = synth.make_segmenter(tmp_path / "wrong.onnx", card_size=128)
    with pytest.raises(ModelError, match=r"card says \(N, 1, 128, 128\)"):
        _pipe(wrong, cls_model).activate()
    relabelled = synth.make_classifier(tmp_path / "classes.onnx", classes=("a", "b", "c", "d", "e"))
    with pytest.raises(ModelError, match="classes"):
        _pipe(seg_model, relabelled).activate()


def test_classifier_with_three_channels_and_other_size(tmp_path, seg_model, image_folder, synth):
    cls = synth.make_classifier(tmp_path / "cls3.onnx", channels=3, size=48)
    with _pipe(seg_model, cls, batch=2) as pipe:
        results = pipe.run(walk_folder(image_folder))
    assert all(r.ok for r in results)


@pytest.mark.parametrize("streams", [1, 2])
def test_failed_inference_and_failed_artifacts_fail_rows(seg_model, cls_model, image_folder, streams):
    files = walk_folder(image_folder)
    with _pipe(seg_model, cls_model, batch=2, streams=streams) as pipe:
        real = pipe.cls._infer

        def flaky(feed):
            if feed["image"].shape[0] == 2:
                raise RuntimeError("device lost")
            return real(feed)

        pipe.cls._infer = flaky
        results = pipe.run(files)
        assert not any(r.ok for r in results)  # 6 files, every batch of 2 fails
        assert all("classifier inference failed: unexpected RuntimeError: device lost" in r.error for r in results
                   if not r.ok)
        pipe.cls._infer = real

        def boom(item, post):
            raise OSError(28, "No space left on device")

        results = pipe.run(files, artifacts=boom)
    assert all(r.status == "error" and "cannot write outputs" in r.error and r.probabilities for r in results)


def test_run_needs_activation(seg_model, cls_model):
    with pytest.raises(Exception, match="activate"):
        _pipe(seg_model, cls_model).run([InputFile(seg_model, "x")])


def test_non_finite_model_outputs_fail_rows(seg_model, cls_model, image_folder):
    files = walk_folder(image_folder)
    with _pipe(seg_model, cls_model, batch=2) as pipe:
        real_cls = pipe.cls._infer
        pipe.cls._infer = lambda feed: {"logits": np.full((feed["image"].shape[0], 5), np.nan, np.float32)}
        results = pipe.run(files)
        assert all(r.status == "error" and "NaN" in r.error for r in results)
        pipe.cls._infer = real_cls
        pipe.seg._infer = lambda feed: {"logits": np.full(feed["image"].shape, np.inf, np.float32)}
        results = pipe.run(files)
    assert all(r.status == "error" and "segmenter returned NaN" in r.error for r in results)


def test_streams_need_runners_that_take_concurrent_calls(seg_model, cls_model):
    pipe = _pipe(seg_model, cls_model, streams=2)
    pipe.cls.concurrent = False  # e.g. a TensorRT execution context
    with pytest.raises(BadInputError, match="several threads"):
        pipe.activate()
    assert not pipe.seg.is_active and not pipe.cls.is_active
    with pytest.raises(BadInputError, match="streams"):
        PipelineConfig(streams=0)


def test_a_failure_inside_a_stream_stops_the_run_and_is_raised(seg_model, cls_model, image_folder):
    files = walk_folder(image_folder)
    calls = []

    def on_result(r):
        calls.append(r)
        raise RuntimeError("callback bug")

    with _pipe(seg_model, cls_model, streams=2) as pipe:
        with pytest.raises(RuntimeError, match="callback bug"):
            pipe.run(files, on_result=on_result)
        assert 1 <= len(calls) < len(files)  # the other stream stopped after its batch
        assert len(pipe.run(files)) == len(files)  # the pipeline is still usable


def test_streams_run_model_calls_at_the_same_time(seg_model, cls_model, image_folder):
    """Two streams really overlap: a model call that waits for a second caller completes."""
    import threading

    barrier = threading.Barrier(2, timeout=10)
    files = walk_folder(image_folder)[:4]
    with _pipe(seg_model, cls_model, streams=2) as pipe:
        real = pipe.seg._infer

        def meet(feed):
            barrier.wait()  # raises BrokenBarrierError after 10 s if the calls were serialised
            return real(feed)

        pipe.seg._infer = meet
        results = pipe.run(files)
    assert all(r.ok for r in results), [r.error for r in results]
