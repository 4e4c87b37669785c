"""Serving the two-stage pipeline: NVIDIA Triton Inference Server and DICOM (docs/serving.md).

* :mod:`manet_edge.serve.engine`: the pipeline over encoded image bytes (one call per batch of
  requests), the code the Triton Python-backend model runs.
* :mod:`manet_edge.serve.repository`: Triton model repositories (``manet-edge serve``'s own, and
  ``manet-edge export --format triton``'s onnxruntime + BLS repository), ``config.pbtxt`` text.
* :mod:`manet_edge.serve.tritonserver`: finding and running the ``tritonserver`` binary.
* :mod:`manet_edge.serve.client`: a small ``tritonclient`` wrapper (HTTP or gRPC).
* ``serve_model.py`` / ``bls_model.py``: the ``model.py`` files copied into a repository.

Nothing here imports tritonclient, pytriton or the Triton Python backend at import time.
"""
