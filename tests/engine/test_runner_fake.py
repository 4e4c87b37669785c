"""TensorRTRunner against a fake tensorrt + fake CUDA: shapes, copies, padding, chunks, graphs, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from manet_edge.errors import BackendUnavailableError, BadInputError
from manet_edge.export.engine import build_engine, make_profile
from manet_edge.runtime.base import create_runner
from manet_edge.runtime.engine_manifest import EngineMismatchError, read_manifest, write_manifest
from manet_edge.runtime.tensorrt import TensorRTRunner


def _expected(image, mask):
    s = (image * mask).reshape(len(image), -1).sum(axis=1)
    return (s[:, None] * np.arange(1, 6)[None, :]).astype(np.float32)


def _feed(n, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (n, 1, 8, 8)).astype(np.float32)
    mask = (rng.uniform(size=(n, 1, 8, 8)) > 0.5).astype(np.float32)
    return {"image": image, "mask": mask}


@pytest.fixture
def engine(fake_trt, tiny_onnx, tmp_path):
    def make(profile=None, precision="fp32", name="e.engine"):
        fake_trt("10.3.0")
        out = tmp_path / name
        build_engine(tiny_onnx, out, precision=precision, profile=profile or make_profile(), rebuild=True,
                     echo=lambda m: None)
        return out
    return make


def test_infer_batch_one(engine, fake_cuda):
    path = engine()
    with TensorRTRunner(path) as r:
        assert r.input_names == ["image", "mask"] and r.output_names == ["logits"]
        assert r.input_shapes == {"image": (None, 1, 8, 8), "mask": (None, 1, 8, 8)}
        assert r.precision == "fp32" and r.card.model_name == "tiny-ma"
        feed = _feed(1)
        out = r.infer(feed)
        np.testing.assert_allclose(out["logits"], _expected(**feed), rtol=1e-6)
        assert out["logits"].dtype == np.float32
        assert r.describe()["tensorrt_version"] == "10.3.0" and r.describe()["cuda_backend"] == "fake-cuda"
    assert not r.is_active and not fake_cuda.device and not fake_cuda.host  # everything freed


def test_range_profile_varies_batch_pads_and_chunks(engine, fake_trt):
    path = engine(make_profile(min_batch=2, opt_batch=2, max_batch=4))
    with create_runner(path, backend="tensorrt") as r:
        for n in (3, 1, 4, 9):  # 1 < min: padded to 2; 9 > max: split into 4 + 4 + 1
            feed = _feed(n, seed=n)
            out = r.infer(feed)
            assert out["logits"].shape == (n, 5)
            np.testing.assert_allclose(out["logits"], _expected(**feed), rtol=1e-5)
    shapes = [s for name, s in fake_trt_shapes(r)]
    assert (2, 1, 8, 8) in shapes and (3, 1, 8, 8) in shapes


def fake_trt_shapes(runner):
    import sys

    return sys.modules["tensorrt"].rec.context_shapes


def test_bad_feeds(engine):
    with TensorRTRunner(engine()) as r:
        with pytest.raises(BadInputError, match="expects"):
            r.infer({"image": _feed(1)["image"]})
        with pytest.raises(BadInputError, match="shape"):
            r.infer({"image": np.zeros((1, 1, 4, 4), np.float32), "mask": np.zeros((1, 1, 4, 4), np.float32)})
        f = _feed(2)
        with pytest.raises(BadInputError, match="same batch size"):
            r.infer({"image": f["image"], "mask": f["mask"][:1]})


def test_cuda_graph_captured_once_per_batch_and_replayed(engine, fake_cuda):
    path = engine(make_profile(min_batch=1, opt_batch=2, max_batch=2))
    with TensorRTRunner(path, cuda_graph=True) as r:
        for seed in range(3):
            feed = _feed(2, seed=seed)
            np.testing.assert_allclose(r.infer(feed)["logits"], _expected(**feed), rtol=1e-5)
        assert fake_cuda.graphs_instantiated == 1 and fake_cuda.log.count(("graph_launch",)) == 2
        feed = _feed(1, seed=7)
        np.testing.assert_allclose(r.infer(feed)["logits"], _expected(**feed), rtol=1e-5)
        assert fake_cuda.graphs_instantiated == 2 and r.graphs_active
    assert fake_cuda.log.count(("graph_destroy",)) == 2


def test_graphs_fall_back_without_backend_support(engine, fake_cuda):
    fake_cuda.supports_graphs = False
    with TensorRTRunner(engine(), cuda_graph=True) as r:
        feed = _feed(1)
        np.testing.assert_allclose(r.infer(feed)["logits"], _expected(**feed), rtol=1e-6)
        assert not r.graphs_active and fake_cuda.graphs_instantiated == 0


def test_other_tensorrt_version_gives_rebuild_hint(engine, fake_trt):
    path = engine()
    fake_trt("10.8.0")
    with pytest.raises(EngineMismatchError) as exc:
        TensorRTRunner(path).activate()
    text = str(exc.value)
    assert "'10.3.0'" in text and "'10.8.0'" in text and "--rebuild" in text and "manet-edge engine build" in text


def test_other_gpu_architecture_is_refused(engine, fake_cuda):
    path = engine()
    fake_cuda.cc, fake_cuda.gpu_name = "8.7", "Orin"
    with pytest.raises(EngineMismatchError, match="compute capability"):
        TensorRTRunner(path).activate()


def test_same_architecture_other_gpu_runs_with_warning(engine, fake_cuda):
    path = engine()
    fake_cuda.gpu_name = "Fake RTX 4080"
    with TensorRTRunner(path) as r:
        assert any("GPU model" in w for w in r.warnings)


def test_stale_onnx_and_replaced_engine_are_refused(engine, tiny_onnx, onnx_factory):
    path = engine()
    onnx_factory("classifier.onnx", size=8, card={"kind": "cls", "model_name": "retrained", "input_size": 8})
    with pytest.raises(EngineMismatchError, match="ONNX sha256"):
        TensorRTRunner(path).activate()
    with TensorRTRunner(path, check_onnx=False):
        pass
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(EngineMismatchError, match="does not match its manifest"):
        TensorRTRunner(path, check_onnx=False).activate()


def test_requested_precision_must_match(engine):
    path = engine()
    with pytest.raises(BadInputError, match="built in fp32, fp16 was requested"):
        TensorRTRunner(path, precision="fp16").activate()


def test_missing_tensorrt_names_the_extra(engine, monkeypatch):
    import sys

    path = engine()
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'manet-edge\[trt\]'"):
        TensorRTRunner(path).activate()


def test_manifest_without_card(engine):
    path = engine()
    m = read_manifest(path)
    write_manifest(path, dataclasses.replace(m, card=None))
    with TensorRTRunner(path) as r:
        with pytest.raises(Exception, match="model card"):
            r.card
