"""Torch reference runner: runs a training checkpoint directly, for parity checks.

This is the only runner that needs torch (``pip install 'manet-edge[train]'``) and the only
runtime module that touches ``manet_edge.train``; both are imported inside :meth:`activate`.
It speaks the exported-ONNX interface (inputs ``image`` (+ ``mask`` for classifiers), output
``logits``), and builds a :class:`~manet_edge.metadata.ModelCard` from the checkpoint so the
pipeline treats it exactly like an exported model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from manet_edge import CLASSES
from manet_edge.errors import BackendUnavailableError, BadInputError, ModelError
from manet_edge.lazy import optional_import
from manet_edge.metadata import ModelCard
from manet_edge.runtime.base import Runner
from manet_edge.runtime.engine_manifest import sha256_file as _sha256




def card_from_checkpoint(ckpt: dict[str, Any], path: Path) -> ModelCard:
    """The model card an export of ``ckpt`` would carry (the fields the pipeline uses)."""
    kind = ckpt.get("kind")
    if kind not in ("seg", "cls"):
        raise ModelError(f"{path}: checkpoint 'kind' must be 'seg' or 'cls', got {kind!r}")
    mc = dict(ckpt.get("model_config") or {})
    size = mc.get("image_size")
    if not isinstance(size, int):
        raise ModelError(f"{path}: checkpoint model_config has no integer 'image_size'")
    if kind == "seg":
        post = dict(ckpt.get("postprocess") or {})
        name = f"unet-{mc.get('encoder', 'unknown')}"
        return ModelCard(kind="seg", model_name=name, input_size=size, in_channels=int(mc.get("in_channels", 1)),
                         mask_threshold=float(post.get("threshold", 0.5)), postprocess=post,
                         source_checkpoint_sha256=_sha256(path))
    name = str(mc.get("name", "unknown"))
    classes = tuple(ckpt.get("classes") or mc.get("classes") or CLASSES)
    return ModelCard(kind="cls", model_name=name, input_size=size, in_channels=int(mc.get("in_channels", 1)),
                     classes=classes, mask_attention=name.endswith("-ma"),
                     normalisation=str(ckpt.get("normalisation") or ""),
                     temperature=float((ckpt.get("calibration") or {}).get("temperature", 1.0)),
                     source_checkpoint_sha256=_sha256(path))


class TorchRunner(Runner):
    """Run a ``.pt`` training checkpoint with PyTorch (fp32; CPU or CUDA)."""

    backend = "torch"

    def __init__(self, path: str | Path, *, precision: str | None = None, name: str | None = None,
                 device: str = "cpu", threads: int | None = None):
        super().__init__(path, precision=precision, name=name)
        if device not in ("cpu", "cuda"):
            raise BadInputError(f"torch device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.threads = threads
        self._model: Any = None
        self._torch: Any = None

    def _activate(self) -> None:
        torch = optional_import("torch", "train")
        checkpoint = optional_import("manet_edge.train.checkpoint", "train", what="torch")
        build_model_from_checkpoint, load_checkpoint = checkpoint.build_model_from_checkpoint, checkpoint.load_checkpoint
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch", "train", "CUDA is not available to torch")
        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        ckpt = load_checkpoint(self.path)
        card = card_from_checkpoint(ckpt, self.path)
        model = build_model_from_checkpoint(ckpt).eval().to(self.device)
        s, c = card.input_size, card.in_channels
        if card.kind == "seg":
            self._inputs = {"image": (None, c, s, s)}
            self._outputs = {"logits": (None, 1, s, s)}
        else:
            self._inputs = {"image": (None, c, s, s), "mask": (None, 1, s, s)}
            self._outputs = {"logits": (None, len(card.classes))}
        self._card = card
        self._precision = "fp32"
        self._model = model
        self._torch = torch

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(feed[name]).to(self.device) for name in self._inputs]
        with torch.inference_mode():
            logits = self._model(*args)
        return {"logits": logits.detach().float().cpu().numpy()}

    def _deactivate(self) -> None:
        self._model = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=self.device, threads=self.threads)
        return d
