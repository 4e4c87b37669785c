"""Rebuild a torch segmenter from an exported ``segmenter.onnx`` (to fine-tune the bundled model).

The exporter folds each BatchNorm into the convolution before it (``X.weight`` scaled, bias
``X.weight_bias``). The rebuilt model gets those folded weights, and each BatchNorm becomes an
identity with the folded bias (weight 1, mean 0, variance 1 - eps), so in eval mode it computes
what the ONNX graph computes; :func:`segmenter_from_onnx` checks that on a probe. Fine-tune it with
``freeze_bn`` (BatchNorm statistics fixed): batch statistics would not match the folded scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from manet_edge.config import PostprocessConfig, SegModelConfig, from_dict
from manet_edge.errors import ModelError
from manet_edge.metadata import CARD_KEY, ModelCard

_UNET_RESNET = {"unet-resnet18": ("resnet18", 4, (128, 64, 32, 16)), "unet-resnet34": ("resnet34", 5, (256, 128, 64, 32, 16))}


def _bn_for(conv_name: str, modules: dict[str, nn.Module]) -> str | None:
    head, _, leaf = conv_name.rpartition(".")
    candidates = []
    if leaf == "0":
        candidates.append(f"{head}.1")
    if leaf.startswith("conv"):
        candidates.append(f"{head}.bn{leaf[4:]}".lstrip("."))
    return next((c for c in candidates if isinstance(modules.get(c), nn.BatchNorm2d)), None)


def segmenter_from_onnx(path: str | Path, *, check: bool = True) -> tuple[nn.Module, SegModelConfig, PostprocessConfig]:
    """``(model in eval mode, its config, the card's clean-up settings)`` for an exported UNet segmenter."""
    import onnx
    from onnx import numpy_helper

    from manet_edge.models.unet import create_segmenter

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    if CARD_KEY not in props:
        raise ModelError(f"{path}: no model card; not a manet-edge export")
    card = ModelCard.from_json(props[CARD_KEY], source=str(path))
    if card.kind != "seg" or card.model_name not in _UNET_RESNET:
        raise ModelError(f"{path}: expected a UNet-ResNet segmenter ({sorted(_UNET_RESNET)}), the card says "
                         f"kind={card.kind} model={card.model_name}")
    encoder, depth, decoder = _UNET_RESNET[card.model_name]
    cfg = SegModelConfig(encoder=encoder, encoder_depth=depth, decoder_channels=decoder,
                         in_channels=card.in_channels, image_size=card.input_size)
    model = create_segmenter(cfg).eval()
    weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    modules = dict(model.named_modules())
    used = set()
    with torch.no_grad():
        for name, mod in modules.items():
            if not isinstance(mod, nn.Conv2d):
                continue
            w = weights.get(f"{name}.weight")
            if w is None or tuple(w.shape) != tuple(mod.weight.shape):
                raise ModelError(f"{path}: no initializer {name}.weight of shape {tuple(mod.weight.shape)}")
            mod.weight.copy_(torch.from_numpy(np.array(w)))
            used.add(f"{name}.weight")
            bias = weights.get(f"{name}.weight_bias", weights.get(f"{name}.bias"))
            bn = _bn_for(name, modules)
            if bn is not None:
                b = modules[bn]
                b.weight.fill_(1.0)
                b.running_mean.zero_()
                b.running_var.fill_(1.0 - b.eps)
                b.bias.copy_(torch.from_numpy(np.array(bias)) if bias is not None else torch.zeros_like(b.bias))
            elif mod.bias is not None and bias is not None:
                mod.bias.copy_(torch.from_numpy(np.array(bias)))
            used.update({f"{name}.weight_bias", f"{name}.bias"} & set(weights))
    if check:
        from manet_edge.runtime.onnxrt import session_from_onnx

        sess = session_from_onnx(proto)
        x = np.random.default_rng(0).random((2, card.in_channels, card.input_size, card.input_size), dtype=np.float32)
        ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        with torch.no_grad():
            got = model(torch.from_numpy(x)).numpy()
        diff = float(np.abs(ref - got).max())
        if diff > 1e-3:
            raise ModelError(f"{path}: rebuilt torch segmenter differs from the ONNX graph by {diff:.2e}")
    post = from_dict(PostprocessConfig, dict(card.postprocess or {}))
    return model, cfg, post
