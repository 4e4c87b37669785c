"""Backends agree: onnxruntime vs openvino (fp32) vs torch (from checkpoints), on raw logits and on
the final pipeline probabilities. fp32 tolerance: identical predictions, max abs diff <= 1e-4."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from manet_edge import CLASSES
from manet_edge.pipeline import Pipeline, PipelineConfig, walk_folder
from manet_edge.runtime import create_runner

TOL = 1e-4


def _pipeline_probs(backend, seg, cls, folder, batch=2, streams=1):
    kw = {"streams": streams} if backend == "openvino" and streams > 1 else {}
    with Pipeline(create_runner(seg, backend, threads=1, **kw), create_runner(cls, backend, threads=1, **kw),
                  PipelineConfig(batch=batch, workers=1, streams=streams)) as pipe:
        results = pipe.run(walk_folder(folder))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    return results


def _compare(ref, other):
    assert [r.file for r in ref] == [r.file for r in other]
    assert [r.prediction for r in ref] == [r.prediction for r in other]
    diff = max(float(np.abs(np.subtract(a.probabilities, b.probabilities)).max()) for a, b in zip(ref, other))
    assert diff <= TOL, diff
    for a, b in zip(ref, other):
        assert a.lung_fraction == pytest.approx(b.lung_fraction, abs=1e-3)


def test_onnxruntime_vs_openvino_fp32(seg_model, cls_model, image_folder):
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 64, 64), dtype=np.float32)
    m = (rng.random((3, 1, 64, 64)) > 0.5).astype(np.float32)
    for path, feed in ((seg_model, {"image": x}), (cls_model, {"image": x * 2 - 1, "mask": m})):
        with create_runner(path, "onnxruntime") as a, create_runner(path, "openvino", "fp32") as b:
            assert np.abs(a.infer(feed)["logits"] - b.infer(feed)["logits"]).max() <= TOL
    _compare(_pipeline_probs("onnxruntime", seg_model, cls_model, image_folder),
             _pipeline_probs("openvino", seg_model, cls_model, image_folder))


def test_openvino_streams_give_each_thread_its_own_request(seg_model, cls_model, image_folder):
    """NUM_STREAMS=2 and one infer request per calling thread: same results as one stream."""
    import threading

    with create_runner(cls_model, "openvino", "fp32", threads=1, streams=2) as r:
        assert r.describe()["streams"] == 2
        rng = np.random.default_rng(1)
        feeds = [{"image": rng.uniform(-1, 1, (2, 1, 64, 64)).astype(np.float32),
                  "mask": np.ones((2, 1, 64, 64), np.float32)} for _ in range(2)]
        want = [r.infer(f)["logits"] for f in feeds]
        got: dict[int, list] = {0: [], 1: []}

        def loop(k):
            for _ in range(20):
                got[k].append(r.infer(feeds[k])["logits"])

        threads = [threading.Thread(target=loop, args=(k,)) for k in (0, 1)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    for k in (0, 1):
        assert len(got[k]) == 20 and all(np.array_equal(g, want[k]) for g in got[k])
    _compare(_pipeline_probs("openvino", seg_model, cls_model, image_folder),
             _pipeline_probs("openvino", seg_model, cls_model, image_folder, streams=2))


# -- torch: the tiny models' torch twins, loaded through a stand-in checkpoint module ----------
def _torch_twins(torch, synth):
    nn = torch.nn

    class TinySeg(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.register_buffer("template", torch.zeros(1, 1, 64, 64))

        def forward(self, image):
            return self.conv(image) + self.template

    class TinyCls(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4, 5)

        def forward(self, image, mask):
            x = torch.relu(self.conv(image * mask))
            return self.fc(x.mean(dim=(2, 3)))

    sw, cw = synth.seg_weights(64), synth.cls_weights(1, 0)
    seg_sd = {"conv.weight": sw["w"], "conv.bias": sw["b"], "template": sw["template"]}
    cls_sd = {"conv.weight": cw["cw"], "conv.bias": cw["cb"], "fc.weight": cw["gw"], "fc.bias": cw["gb"]}
    return TinySeg, TinyCls, {k: torch.from_numpy(v) for k, v in seg_sd.items()}, \
        {k: torch.from_numpy(v) for k, v in cls_sd.items()}


@pytest.fixture
def torch_checkpoints(tmp_path, monkeypatch, synth):
    torch = pytest.importorskip("torch")
    TinySeg, TinyCls, seg_sd, cls_sd = _torch_twins(torch, synth)

    def load_checkpoint(path):
        return torch.load(path, map_location="cpu", weights_only=True)

    def build_model_from_checkpoint(ckpt):
        model = TinySeg() if ckpt["kind"] == "seg" else TinyCls()
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()

    stub = types.ModuleType("manet_edge.train.checkpoint")
    stub.load_checkpoint, stub.build_model_from_checkpoint = load_checkpoint, build_model_from_checkpoint
    monkeypatch.setitem(sys.modules, "manet_edge.train.checkpoint", stub)
    seg, cls = tmp_path / "segmenter.pt", tmp_path / "classifier.pt"
    torch.save({"kind": "seg", "model_config": {"encoder": "tiny", "image_size": 64, "in_channels": 1},
                "state_dict": seg_sd, "postprocess": {"threshold": 0.5}, "epoch": 1}, seg)
    torch.save({"kind": "cls", "model_config": {"name": "tiny-cls-ma", "image_size": 64, "in_channels": 1},
                "classes": list(CLASSES), "state_dict": cls_sd, "epoch": 1}, cls)
    return seg, cls


def test_torch_runner_from_checkpoints(torch_checkpoints):
    seg, cls = torch_checkpoints
    with create_runner(seg, "torch") as s, create_runner(cls, "torch") as c:
        assert s.card.kind == "seg" and s.card.input_size == 64 and len(s.card.source_checkpoint_sha256) == 64
        assert c.card.kind == "cls" and c.card.mask_attention and c.input_names == ["image", "mask"]
        assert s.precision == c.precision == "fp32"
        assert c.infer({"image": np.zeros((2, 1, 64, 64)), "mask": np.ones((2, 1, 64, 64))})["logits"].shape == (2, 5)


def test_torch_vs_onnxruntime_vs_openvino(torch_checkpoints, seg_model, cls_model, image_folder):
    seg_pt, cls_pt = torch_checkpoints
    ref = _pipeline_probs("onnxruntime", seg_model, cls_model, image_folder)
    _compare(ref, _pipeline_probs("torch", seg_pt, cls_pt, image_folder))
    _compare(ref, _pipeline_probs("openvino", seg_model, cls_model, image_folder))


# -- the project's real models, when the torch side of the package is present -----------------
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Converting a tensor to a Python boolean")
def test_real_models_torch_vs_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    try:
        from manet_edge.config import ClsModelConfig, SegModelConfig, to_dict
        from manet_edge.metadata import CARD_KEY
        from manet_edge.models import create_model
        from manet_edge.models.unet import create_segmenter
        import manet_edge.train.checkpoint  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"models/train not available yet: {exc}")
    import onnx

    from manet_edge.runtime.torch import card_from_checkpoint

    size = 64
    torch.manual_seed(0)  # random weights: unseeded, an unlucky draw's logits sat at the tolerance
    cases = [("seg", create_segmenter(SegModelConfig(image_size=size)), to_dict(SegModelConfig(image_size=size))),
             ("cls", create_model("resnet18-ma"), to_dict(ClsModelConfig(name="resnet18-ma", image_size=size)))]
    rng = np.random.default_rng(0)
    for kind, model, mcfg in cases:
        ckpt = {"kind": kind, "model_config": mcfg, "train_config": {}, "state_dict": model.state_dict(),
                "epoch": 0, "classes": list(CLASSES), "postprocess": {}, "metrics": {}}
        pt = tmp_path / f"{kind}.pt"
        torch.save(ckpt, pt)
        names = ["image"] if kind == "seg" else ["image", "mask"]
        args = tuple(torch.rand(1, 1, size, size) for _ in names)
        onnx_path = tmp_path / f"{kind}.onnx"
        torch.onnx.export(model.eval(), args, str(onnx_path), input_names=names, output_names=["logits"],
                          dynamic_axes={n: {0: "N"} for n in [*names, "logits"]}, opset_version=17, dynamo=False)
        proto = onnx.load(str(onnx_path))
        onnx.helper.set_model_props(proto, {CARD_KEY: card_from_checkpoint(ckpt, pt).to_json()})
        onnx.save(proto, str(onnx_path))
        feed = {n: rng.random((2, 1, size, size), dtype=np.float32) for n in names}
        if "mask" in feed:
            feed["mask"] = (feed["mask"] > 0.5).astype(np.float32)
        with create_runner(pt, "torch") as t, create_runner(onnx_path, "onnxruntime") as o, \
                create_runner(onnx_path, "openvino", "fp32") as v:
            ref = t.infer(feed)["logits"]
            assert np.abs(ref - o.infer(feed)["logits"]).max() <= TOL
            assert np.abs(ref - v.infer(feed)["logits"]).max() <= TOL


def test_infer_command_on_torch_checkpoints(torch_checkpoints, image_folder, tmp_path):
    import json

    from manet_edge.commands.infer import run_infer

    models = torch_checkpoints[0].parent
    code = run_infer(folder=image_folder, out=tmp_path / "out", backend="torch", models=models, batch=2,
                     progress=False)
    assert code == 0
    meta = json.loads((tmp_path / "out" / "predictions.json").read_text())["meta"]
    assert meta["backend"] == "torch" and meta["precision"]["classifier"] == "fp32"
    assert "torch" in meta["libraries"]
