"""``manet-edge export --format triton``: the model repository, parsed with Triton's own schema, and
its BLS model run in the bundled tritonserver.

The bundled server (nvidia-pytriton's) has only the Python backend, so the repository's two
``onnxruntime`` models cannot load in it. To run the BLS model for real, the test replaces them by
Python-backend stand-ins with the same names, inputs and outputs that run the same ``model.onnx``
with ONNX Runtime; the BLS model itself (decode, pre-processing, BLS calls, clean-up, empty-mask
skip, row) is the exported file, unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manet_edge" / "assets" / "samples"

STAND_IN = '''
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        self.session = ort.InferenceSession(str(here / "model.onnx"), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def execute(self, requests):
        out = []
        for r in requests:
            feed = {n: np.from_dlpack(pb_utils.get_input_tensor_by_name(r, n)).copy() for n in self.inputs}
            logits = self.session.run(["logits"], feed)[0]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("logits", np.ascontiguousarray(logits))]))
        return out
'''


def export(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "export", "--format", "triton", "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "models"
    res = export(out, "--max-batch", "8", "--queue-delay-us", "3000", "--instances", "2")
    assert res.returncode == 0, res.stderr
    return out


def test_configs_parse_with_tritons_schema(repository):
    pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed (pip install 'manet-edge[serve]')")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from manet_edge.metadata import read_onnx_card

    configs = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), mc.ModelConfig())  # raises on any unknown field
        assert config.name == path.parent.name
        configs[config.name] = config
    assert set(configs) == {"segmenter", "classifier", "manet_edge"}
    for name, config in configs.items():
        assert config.max_batch_size == 8
        assert config.dynamic_batching.max_queue_delay_microseconds == 3000
        assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    seg, cls = configs["segmenter"], configs["classifier"]
    assert seg.backend == cls.backend == "onnxruntime" and configs["manet_edge"].backend == "python"
    seg_card = read_onnx_card(str(repository / "segmenter" / "1" / "model.onnx"))
    cls_card = read_onnx_card(str(repository / "classifier" / "1" / "model.onnx"))
    s, c = seg_card.input_size, cls_card.input_size
    assert [(t.name, t.data_type, list(t.dims)) for t in seg.input] == [("image", mc.TYPE_FP32, [1, s, s])]
    assert [(t.name, list(t.dims)) for t in seg.output] == [("logits", [1, s, s])]
    assert [(t.name, list(t.dims)) for t in cls.input] == [("image", [1, c, c]), ("mask", [1, c, c])]
    outputs = [(t.name, list(t.dims)) for t in cls.output]
    assert outputs[0] == ("logits", [5])
    # a classifier exported with its heat-map output also exposes the last feature map (C, h, w)
    import onnx

    graph_outputs = [o.name for o in onnx.load(str(repository / "classifier" / "1" / "model.onnx"),
                                               load_external_data=False).graph.output]
    assert [name for name, _ in outputs] == graph_outputs
    for name, dims in outputs[1:]:
        assert name == "features" and len(dims) == 3 and dims[0] > 0, outputs
    bls = configs["manet_edge"]
    assert bls.input[0].name == "IMAGE" and bls.input[0].allow_ragged_batch
    assert [t.name for t in bls.output] == ["ROW", "PROBABILITIES", "MASK"]
    params = {k: v.string_value for k, v in bls.parameters.items()}
    assert json.loads(params["classifier_card"])["temperature"] == cls_card.temperature
    assert params["segmenter_model"] == "segmenter" and params["classifier_inputs"] == "image,mask"


def test_refuses_to_overwrite(repository):
    before = (repository / "segmenter" / "config.pbtxt").read_text()
    res = export(repository)
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert (repository / "segmenter" / "config.pbtxt").read_text() == before


def _inference_count(url: str, model: str) -> int:
    import tritonclient.http as http

    client = http.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model)["model_stats"]
        return sum(int(m.get("inference_count", 0)) for m in stats)
    finally:
        client.close()


def test_bls_model_runs_in_bundled_server(repository, tmp_path, request, triton_dist):
    import shutil

    from PIL import Image

    from manet_edge.commands.infer import run_infer
    from manet_edge.serve.client import PipelineClient, RequestError
    from manet_edge.serve.tritonserver import TritonServer, free_port
    dist = triton_dist
    repo = tmp_path / "repo"
    shutil.copytree(repository, repo)
    for role in ("segmenter", "classifier"):  # Python-backend stand-ins for the onnxruntime models
        cfg = repo / role / "config.pbtxt"
        cfg.write_text(cfg.read_text().replace('backend: "onnxruntime"', 'backend: "python"'))
        (repo / role / "1" / "model.py").write_text(STAND_IN)
    server = TritonServer(repo, dist, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                          exit_timeout_s=5, log_path=tmp_path / "triton.log")
    request.addfinalizer(server.stop)
    server.start()
    server.wait_ready(180, model="manet_edge")

    images = tmp_path / "images"
    images.mkdir()
    for p in sorted(SAMPLES.glob("*.png"))[:4]:
        shutil.copy(p, images / p.name)
    Image.fromarray(np.tile(np.linspace(0, 255, 256), (256, 1)).astype(np.uint8)).save(images / "gradient.png")
    out = tmp_path / "infer"
    assert run_infer(folder=images, out=out, progress=False) == 1  # the gradient: no lung found
    rows = {r["file"]: r for r in json.loads((out / "predictions.json").read_text())["rows"]}
    assert rows["gradient.png"]["flags"] == ["empty_mask"]

    with PipelineClient(server.grpc_url, protocol="grpc") as client:
        for name, ref in rows.items():
            if ref["status"] != "ok":
                continue
            row, probs, mask = client.infer((images / name).read_bytes(), mask=True)
            assert row["prediction"] == ref["prediction"]
            want = np.array([ref[k] for k in ref if k.startswith("p_")])
            np.testing.assert_allclose(probs, want, rtol=0, atol=1e-5)
            assert mask.shape == Image.open(images / name).size[::-1]
        seg_before = _inference_count(server.http_url, "segmenter")
        cls_before = _inference_count(server.http_url, "classifier")
        with pytest.raises(RequestError, match="no lung found"):
            client.infer((images / "gradient.png").read_bytes())
        assert _inference_count(server.http_url, "segmenter") == seg_before + 1
        assert _inference_count(server.http_url, "classifier") == cls_before  # skipped: empty mask
        with pytest.raises(RequestError, match="not a recognised image"):
            client.infer(b"not an image")
        assert client.ready()
    assert server.stop() == 0



def test_engines_become_tensorrt_models(tmp_path):
    """With segmenter/classifier .engine files beside the .onnx files, the repository gets
    tensorrt models (GPU instance groups) and the BLS model calls them."""
    pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed (pip install 'manet-edge[serve]')")
    import shutil

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    models = tmp_path / "models"
    models.mkdir()
    for role in ("segmenter", "classifier"):
        shutil.copy(ROOT / "manet_edge" / "assets" / "models" / f"{role}.onnx", models)
        (models / f"{role}.engine").write_bytes(f"{role} engine bytes".encode())  # copied as is, not loaded
    out = tmp_path / "repo"
    res = export(out, "--models", str(models), "--gpu")
    assert res.returncode == 0, res.stderr
    for role in ("segmenter", "classifier"):
        config = text_format.Parse((out / f"{role}_trt" / "config.pbtxt").read_text(), mc.ModelConfig())
        assert config.backend == "tensorrt" and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        onnx_config = text_format.Parse((out / role / "config.pbtxt").read_text(), mc.ModelConfig())
        assert list(config.input) == list(onnx_config.input) and list(config.output) == list(onnx_config.output)
        assert (out / f"{role}_trt" / "1" / "model.plan").read_bytes() == f"{role} engine bytes".encode()
    bls = text_format.Parse((out / "manet_edge" / "config.pbtxt").read_text(), mc.ModelConfig())
    params = {k: v.string_value for k, v in bls.parameters.items()}
    assert params["segmenter_model"] == "segmenter_trt" and params["classifier_model"] == "classifier_trt"
