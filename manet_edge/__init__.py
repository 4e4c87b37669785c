"""manet-edge: MANet (two-stage lung segmentation + mask-attention CNN) from training to edge inference.

The package root is deliberately light: importing :mod:`manet_edge` pulls in only the standard
library. Heavy dependencies (torch, onnxruntime, openvino, tensorrt) are imported inside the
functions that need them.
"""

__version__ = "0.1.0"

CLASSES: tuple[str, ...] = ("normal", "covid", "tb", "bacterial", "viral")
"""The five MANet classes, in the order used by every model head and output file."""
