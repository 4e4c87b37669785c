"""A small client for ``manet-edge serve`` (tritonclient, HTTP or gRPC).

>>> from manet_edge.serve.client import PipelineClient
>>> with PipelineClient("127.0.0.1:8000", protocol="http") as c:
...     row = c.classify(open("xray.png", "rb").read())      # the predictions.csv row (dict)

A request the server refuses (bad image, no lung found) raises :class:`RequestError` with the
server's message; the server keeps serving.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from manet_edge.errors import BackendUnavailableError, ManetEdgeError

MODEL = "manet_edge"


class RequestError(ManetEdgeError):
    """The server answered this request with an error (the message is the server's)."""


def _module(protocol: str):
    try:
        if protocol == "http":
            import tritonclient.http as mod
        elif protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            raise ManetEdgeError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    except ImportError as exc:
        raise BackendUnavailableError("triton client", "serve", f"tritonclient is not installed: {exc}") from None
    return mod


class PipelineClient:
    def __init__(self, url: str, *, protocol: str = "http", model: str = MODEL, timeout_s: float = 60.0):
        self.protocol = protocol
        self.model = model
        self.timeout_s = timeout_s
        self._mod = _module(protocol)
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            self._client = self._mod.InferenceServerClient(url)

    def __enter__(self) -> "PipelineClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def ready(self) -> bool:
        return bool(self._client.is_server_ready()) and bool(self._client.is_model_ready(self.model))

    def infer(self, data: bytes, *, mask: bool = False, request_id: str = "") -> tuple[dict[str, Any], np.ndarray,
                                                                                      np.ndarray | None]:
        """(row, probabilities, mask or None) for one encoded file."""
        from tritonclient.utils import InferenceServerException

        mod = self._mod
        array = np.frombuffer(bytes(data), np.uint8)[None]
        inp = mod.InferInput("IMAGE", list(array.shape), "UINT8")
        inp.set_data_from_numpy(array)
        names = ["ROW", "PROBABILITIES"] + (["MASK"] if mask else [])
        outputs = [mod.InferRequestedOutput(n) for n in names]
        kwargs: dict[str, Any] = {"request_id": request_id} if request_id else {}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        try:
            result = self._client.infer(self.model, [inp], outputs=outputs, **kwargs)
        except InferenceServerException as exc:
            raise RequestError(exc.message() or str(exc)) from None
        row = json.loads(result.as_numpy("ROW").tobytes().decode("utf-8"))
        probs = result.as_numpy("PROBABILITIES")[0]
        m = result.as_numpy("MASK")[0] if mask else None
        return row, probs, m

    def classify(self, data: bytes, **kwargs: Any) -> dict[str, Any]:
        return self.infer(data, **kwargs)[0]
