"""Every CLI choice is one of the library's own names, and the library accepts each of them."""

from __future__ import annotations

import pytest

from manet_edge import choices
from manet_edge.commands import bench, export, train


def values(enum_cls) -> tuple[str, ...]:
    return tuple(m.value for m in enum_cls)


def test_export_choices_are_the_rewrite_and_engine_tuples():
    pytest.importorskip("onnx")
    from manet_edge.rewrite import MA_BODIES, MA_OPS
    from manet_edge.rewrite.fuse_mask_mul import make_rule
    from manet_edge.runtime.engine_manifest import PRECISIONS as ENGINE_PRECISIONS

    assert values(export.MaOp) == MA_OPS == ("fused", "inline")
    assert values(export.MaBody) == MA_BODIES
    for body in values(export.MaBody):
        assert make_rule(body) is not None  # an unknown body raises
    assert values(export.Precision) == ENGINE_PRECISIONS == ("fp32", "fp16", "int8")
    assert values(export.Format) == ("onnx", "engine", "triton")


def test_calibration_choices_are_onnxruntime_methods():
    quant = pytest.importorskip("onnxruntime.quantization")
    assert values(export.CalibMethod) == tuple(choices.CALIB_METHODS)
    for member in choices.CALIB_METHODS.values():
        assert hasattr(quant.CalibrationMethod, member), member


def test_bench_choices_are_accepted_by_the_benchmark_targets():
    pytest.importorskip("numpy")
    from manet_edge.benchmarks.targets import resolve_ma_op
    from manet_edge.runtime.onnxrt import DEVICES

    assert values(bench.MaOp) == ("auto", *values(export.MaOp))
    assert {resolve_ma_op(op, "onnxruntime") for op in values(bench.MaOp)} <= set(values(export.MaOp))
    assert values(bench.Device) == DEVICES


def test_train_choices_are_the_training_tuples():
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from manet_edge.preprocess import CLS_NORMALISATIONS
    from manet_edge.train.amp import AMP_MODES
    from manet_edge.train.augment import AUGMENTS, cls_augment

    assert values(train.Amp) == AMP_MODES
    assert values(train.Augment) == AUGMENTS
    assert values(train.Norm) == CLS_NORMALISATIONS
    for recipe in AUGMENTS:
        cls_augment(recipe)  # an unknown recipe raises
    assert values(train.Optimizer) == choices.OPTIMIZERS
    assert values(train.Balance) == choices.BALANCES


def test_optimizer_choices_build_an_optimizer():
    torch = pytest.importorskip("torch")
    from manet_edge.train.loop import TrainConfig, make_optimizer

    net = torch.nn.Linear(2, 1)
    for name in values(train.Optimizer):
        cfg = TrainConfig(epochs=1, batch_size=1, lr=0.1, weight_decay=0.0, optimizer=name, scheduler="constant",
                          loss="ce", image_size=32)
        assert isinstance(make_optimizer(net, cfg), torch.optim.Optimizer)


def test_preset_choices_name_seg_and_cls_presets():
    pytest.importorskip("torch")
    from manet_edge.train.loop import PRESETS

    for scale in values(train.SegPreset):
        assert f"seg-{scale}" in PRESETS and f"cls-{scale}" in PRESETS


def test_flops_conventions_are_the_counters():
    pytest.importorskip("torch")
    from manet_edge.benchmarks.flops import COUNTERS, Convention
    from manet_edge.commands import flops

    assert values(flops.Convention) == tuple(c.value for c in Convention) == choices.FLOP_CONVENTIONS
    assert set(COUNTERS) == set(Convention)
