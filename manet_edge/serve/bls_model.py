"""The Python BLS model of ``manet-edge export --format triton`` (copied as ``manet_edge/1/model.py``).

Same request and responses as ``manet-edge serve``'s model (``IMAGE`` in; ``ROW``, ``PROBABILITIES``
and, when asked, ``MASK`` out; see :mod:`manet_edge.serve.serve_model`), but the two networks run
as their own Triton models (``segmenter`` and ``classifier``: ``onnxruntime``, or ``tensorrt_plan``
when the repository was exported with engines), called through Business Logic Scripting
(``pb_utils.InferenceRequest(...).exec()``). Decoding, pre-processing, the mask clean-up, the
empty-mask skip (no lung found: the classifier is not called and the request gets an error) and
the calibrated softmax are manet-edge's own pipeline (:class:`manet_edge.pipeline.Pipeline`), run
with :class:`TritonModelRunner` in place of a local runner, so the Python environment of the
Triton server needs manet-edge's base install (``pip install manet-edge``; no ONNX Runtime is
used inside this model). Model cards travel in ``config.pbtxt`` parameters.

Tensors cross the Python backend through DLPack, as in ``serve_model.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend

from manet_edge.metadata import ModelCard
from manet_edge.runtime.base import Runner
from manet_edge.serve.engine import BytesPipeline
from manet_edge.serve.serve_model import TritonPythonModel as _ServeModel


class TritonModelRunner(Runner):
    """A :class:`~manet_edge.runtime.base.Runner` whose model is another model of this Triton server."""

    backend = "triton"

    def __init__(self, path: Path, model: str, card: ModelCard, inputs: list[str]):
        super().__init__(path, name=model)
        self.model = model
        self._given_card = card
        self._input_list = inputs

    def _activate(self) -> None:
        card = self._given_card
        size, ch = card.input_size, card.in_channels
        self._card = card
        self._precision = card.precision
        if card.kind == "seg":
            self._inputs = {"image": (None, ch, size, size)}
            self._outputs = {"logits": (None, 1, size, size)}
        else:
            self._inputs = {n: (None, ch if n == "image" else 1, size, size) for n in self._input_list}
            self._outputs = {"logits": (None, len(card.classes))}

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(arr)) for name, arr in feed.items()]
        request = pb_utils.InferenceRequest(model_name=self.model, inputs=tensors, requested_output_names=["logits"])
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"Triton model '{self.model}': {response.error().message()}")
        out = pb_utils.get_output_tensor_by_name(response, "logits")
        return {"logits": np.array(np.from_dlpack(out), copy=True)}

    def describe(self) -> dict:
        return {"backend": "triton", "model": self.model}


class TritonPythonModel(_ServeModel):
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        repo = Path(args["model_repository"]).parent
        runners = []
        for role in ("segmenter", "classifier"):
            model = params[f"{role}_model"]
            card = ModelCard.from_json(params[f"{role}_card"], source=f"{role} card in {repo / 'manet_edge'}")
            inputs = [n for n in params.get(f"{role}_inputs", "image").split(",") if n]
            files = sorted((repo / model).glob("*/model.*"))
            runners.append(TritonModelRunner(files[0] if files else repo / model / "config.pbtxt", model, card, inputs))
        self.engine = BytesPipeline(*runners, batch=max(1, int(config.get("max_batch_size") or 1)), backend="triton")
        pb_utils.Logger.log_info(f"manet-edge BLS pipeline ready: {json.dumps(self.engine.describe())}")
