"""The Triton Python-backend model that ``manet-edge serve`` runs (``<repository>/manet_edge/1/model.py``
imports it).

Request: ``IMAGE`` (UINT8, ``[1, n]``): the encoded file (PNG, JPEG, TIFF, BMP or DICOM bytes).
Responses: ``ROW`` (UINT8 ``[1, n]``): the ``predictions.csv`` row as UTF-8 JSON (the typed row of
``predictions.json``; ``file`` is the request id or ``request``); ``PROBABILITIES`` (FP32 ``[1, 5]``,
the classes in :data:`manet_edge.CLASSES` order); ``MASK`` (UINT8 ``[1, H, W]``, 0/255 at the
input's resolution) only when the request names it among its outputs. A request whose row has
``status=error`` (undecodable or blank image, no lung found) gets an error response carrying
the row's message; the other requests of the batch are answered normally.

Tensors cross the Python backend through DLPack (``np.from_dlpack`` / ``Tensor.from_dlpack``), and
strings travel as UTF-8 bytes in UINT8 tensors, not as Triton BYTES tensors: the Python backend
stub shipped with nvidia-pytriton 0.7 is built against numpy 1, and under numpy 2 (seen here with
numpy 2.4) its ``as_numpy()`` returns arrays whose every element reads the first byte, and BYTES
tensors are mis-read. DLPack does not go through numpy's C structures and works with either.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend

from manet_edge.serve.engine import BytesPipeline, env_settings


def tensor_bytes(tensor) -> bytes:
    """The raw bytes of an input tensor, through DLPack (see the module docstring for why not as_numpy)."""
    return np.from_dlpack(tensor).tobytes()


def make_tensor(name: str, array: np.ndarray):
    """An output tensor built through DLPack from a C-contiguous copy of ``array``."""
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array).copy())


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        settings = env_settings(config.get("parameters", {}))
        settings.setdefault("batch", max(1, int(config.get("max_batch_size") or 1)))
        self.engine = BytesPipeline.from_options(**settings)
        pb_utils.Logger.log_info(f"manet-edge pipeline ready: {json.dumps(self.engine.describe())}")

    def execute(self, requests):
        blobs, names, masks = [], [], []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
            blobs.append(b"" if tensor is None else tensor_bytes(tensor))
            names.append(request.request_id() or "request")
            masks.append("MASK" in request.requested_output_names())
        try:
            answers = self.engine.run(blobs, names=names, want_mask=masks)
        except Exception as exc:  # every request of this batch gets the error; the model stays up
            message = f"manet-edge: the pipeline failed on this batch: {type(exc).__name__}: {exc}"
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
        responses = []
        for answer, want in zip(answers, masks):
            if not answer.ok:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"manet-edge: {answer.row['error']}")))
                continue
            text = json.dumps(answer.row).encode("utf-8")
            outputs = [make_tensor("ROW", np.frombuffer(text, np.uint8)[None]),
                       make_tensor("PROBABILITIES", np.array(
                           [[answer.row[k] for k in answer.row if k.startswith("p_")]], np.float32))]
            if want and answer.mask is not None:
                outputs.append(make_tensor("MASK", answer.mask[None]))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()
