"""The named choices of library options, in one light module (standard library only).

The library checks its arguments against these tuples and the CLI builds its option choices from
them (``manet_edge.commands.choices_enum``), so a choice added here reaches both, and
``manet-edge --help`` never imports torch or onnx to learn them.
"""

from __future__ import annotations

MA_OPS: tuple[str, ...] = ("fused", "inline")
"""How MA sites are written in an exported ONNX: one ``manet_edge::MaskAttentionMul`` node each (a
model-local function) or the same graph inlined into standard ops (``manet_edge.rewrite``)."""

MA_OP_CHOICES: tuple[str, ...] = ("auto", *MA_OPS)
"""``MA_OPS`` plus ``auto`` (the benchmarks pick the form per backend: ``benchmarks.targets.resolve_ma_op``)."""

MA_BODIES: tuple[str, ...] = ("auto", "expand", "broadcast")
"""How each MA site broadcasts its map (``manet_edge.rewrite.fuse_mask_mul``)."""

EXPORT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
"""Precisions written as files by ``export`` and built as TensorRT engines (``runtime.engine_manifest``);
the runtime's ``runtime.backends.PRECISIONS`` adds ``bf16``, a cast at run time."""

CALIB_METHODS: dict[str, str] = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
"""int8 calibration: option value -> onnxruntime ``CalibrationMethod`` member (``export.quantize``)."""

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "engine", "triton")
"""What ``export`` writes: ONNX files, TensorRT engines of them, or a Triton model repository."""

ORT_DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
"""Devices of the ONNX Runtime and torch runners (auto: CUDA where present)."""

AMP_MODES: tuple[str, ...] = ("auto", "bf16", "off")
"""Mixed precision in training (``manet_edge.train.amp``)."""

AUGMENTS: tuple[str, ...] = ("paper", "robust")
"""Training augmentation recipes (``manet_edge.train.augment``)."""

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
"""Training optimizers (``manet_edge.train.loop.make_optimizer`` builds each; tests/cli/test_choices.py)."""

BALANCES: tuple[str, ...] = ("none", "sampler", "loss", "sqrt")
"""Class balancing for the scarce TB class (``manet_edge.train.cls``)."""

PRESET_SCALES: tuple[str, ...] = ("cpu", "paper")
"""``train --preset``: each names a ``seg-<scale>`` and a ``cls-<scale>`` row of ``manet_edge.train.loop.PRESETS``."""

FLOP_CONVENTIONS: tuple[str, ...] = ("thop", "true")
"""How ``flops`` counts operations: ``thop`` = the paper's Table 3, ``true`` = real arithmetic
(``manet_edge.benchmarks.flops.Convention``)."""
