"""Export (installed as ``manet_edge.export``): torch checkpoints -> ONNX, graph rules, reduced precision.

* :mod:`manet_edge.export.plan` - one export as one frozen :class:`ExportPlan` and one :func:`run_export` call
  (what ``manet-edge export`` does; light to import).
* :mod:`manet_edge.export.onnx` - torch -> ONNX with the model card, MA folded (may import torch).
* :mod:`manet_edge.rewrite` - one graph rewrite per file; the MA op's local function.
* :mod:`manet_edge.export.quantize` - fp16 cast pass and int8 QDQ calibrated on real X-rays.
* :mod:`manet_edge.export.verify` - parity tables (torch vs ONNX Runtime, fused vs inlined).
* :mod:`manet_edge.export.engine` - TensorRT engines (separate owner).

The core package (and so the runtime) never imports this package. Importing it is light: the
sub-modules import torch, onnxruntime or openvino inside the functions that need them.
"""
