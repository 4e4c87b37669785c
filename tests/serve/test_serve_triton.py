"""``manet-edge serve`` for real: tritonserver on 127.0.0.1, requests over HTTP and gRPC (tritonclient)."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "manet_edge" / "assets" / "samples"


@pytest.fixture(scope="module")
def infer_rows(tmp_path_factory):
    """``manet-edge infer`` on the bundled samples (in-process), with masks: the reference."""
    from manet_edge.commands.infer import run_infer

    out = tmp_path_factory.mktemp("infer")
    assert run_infer(folder=SAMPLES, out=out, save_masks=True, progress=False) == 0
    rows = json.loads((out / "predictions.json").read_text())["rows"]
    return {r["file"]: r for r in rows}, out


def _rows_key(row):
    return np.array([row[k] for k in row if k.startswith("p_")], dtype=np.float64)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_probabilities_equal_infer(server, infer_rows, protocol):
    from manet_edge.serve.client import PipelineClient

    rows, out = infer_rows
    url = f"127.0.0.1:{server.http if protocol == 'http' else server.grpc}"
    files = sorted(SAMPLES.glob("*.png"))
    assert len(files) == 10

    def one(path):
        with PipelineClient(url, protocol=protocol) as client:
            return path.name, client.infer(path.read_bytes(), mask=True, request_id=path.name)

    with ThreadPoolExecutor(4) as pool:  # concurrent requests: the dynamic batcher groups them
        answers = dict(pool.map(one, files))
    for name, (row, probs, mask) in answers.items():
        ref = rows[name]
        assert row["file"] == name and row["status"] == "ok"
        assert row["prediction"] == ref["prediction"]
        np.testing.assert_allclose(_rows_key(row), _rows_key(ref), rtol=0, atol=1e-5)
        np.testing.assert_allclose(probs, _rows_key(ref), rtol=0, atol=1e-5)
        assert row["lung_fraction"] == pytest.approx(ref["lung_fraction"], abs=1e-6)
        png = np.asarray(Image.open(out / "masks" / name))
        assert mask.shape == png.shape and mask.dtype == np.uint8
        assert (mask == png).mean() > 0.9999, name


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_request_is_an_error_and_server_keeps_serving(server, protocol, tmp_path):
    from manet_edge.serve.client import PipelineClient, RequestError

    url = f"127.0.0.1:{server.http if protocol == 'http' else server.grpc}"
    good = sorted(SAMPLES.glob("*.png"))[0].read_bytes()
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(blank)
    with PipelineClient(url, protocol=protocol) as client:
        with pytest.raises(RequestError, match="corrupt PNG file"):
            client.classify(b"\x89PNG\r\n\x1a\n this is not really a png")
        with pytest.raises(RequestError, match="not a recognised image file"):
            client.classify(b"just some text, no image")
        with pytest.raises(RequestError, match="truncated|cannot|corrupt|broken|not a recognised"):
            client.classify(good[: len(good) // 3])
        with pytest.raises(RequestError, match="blank"):
            client.classify(blank.read_bytes())
        with pytest.raises(RequestError, match="empty"):
            client.classify(b"")
        assert client.classify(good)["status"] == "ok"
        assert client.ready()


def test_health_and_metrics(server):
    base = f"http://127.0.0.1:{server.http}"
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/manet_edge/ready"):
        with urllib.request.urlopen(base + path, timeout=5) as r:
            assert r.status == 200, path
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    ok = [line for line in text.splitlines()
          if line.startswith("nv_inference_request_success") and 'model="manet_edge"' in line]
    assert ok and float(ok[0].split()[-1]) >= 1
    assert "nv_inference_request_failure" in text


def test_sigterm_stops_cleanly(server):
    """Last in this module: SIGTERM to `manet-edge serve` -> Triton stops, exit code 143, ports closed."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 143
    log = server.log.read_text()
    assert "server stopped" in log
    for port in (server.http, server.grpc):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
