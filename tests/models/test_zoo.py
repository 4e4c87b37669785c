"""The model zoo: registry, one call signature, torchvision fidelity, forward+backward at 64x64."""

from __future__ import annotations

import pytest
import torch

from manet_edge.errors import BadInputError, ManetEdgeError
from manet_edge.models import UnknownModelError, create_model, list_models

torch.set_num_threads(1)

ARCHS = ("resnet18", "resnet34", "resnet50", "vgg16", "inception_v3")


def test_list_models_is_architectures_times_variants():
    names = list_models()
    assert len(names) == 15 and len(set(names)) == 15
    assert {n for n in names if "-" not in n} == set(ARCHS)
    assert all(n.split("-")[1] in ("ma", "cbam") for n in names if "-" in n)


@pytest.mark.parametrize("bad", ["resnet", "vgg16-bn", "resnet50-MA", "inception", "-ma", ""])
def test_unknown_name_lists_valid_names(bad):
    with pytest.raises(UnknownModelError) as err:
        create_model(bad)
    assert isinstance(err.value, ManetEdgeError) and isinstance(err.value, ValueError)
    assert "resnet50-ma" in str(err.value) and "inception_v3-cbam" in str(err.value)


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward_at_64(name):
    """(e) batch 2, 1 channel, 64x64 (Inception zero-pads to its 75 px minimum internally)."""
    torch.manual_seed(0)
    model = create_model(name).train()
    image = torch.randn(2, 1, 64, 64, requires_grad=True)
    mask = (torch.rand(2, 1, 64, 64) > 0.4).float()
    logits = model(image, mask)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    feats = model.forward_features(image.detach(), mask)
    assert feats.dim() == 4 and feats.shape[1] == model.num_features
    assert model.forward_head(feats).shape == (2, 5)


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_counts_match_torchvision(arch):
    """With 3 channels our layouts have exactly torchvision's parameter count (vgg16 = vgg16_bn)."""
    tvm = pytest.importorskip("torchvision.models")
    ref = {
        "resnet18": lambda: tvm.resnet18(num_classes=5),
        "resnet34": lambda: tvm.resnet34(num_classes=5),
        "resnet50": lambda: tvm.resnet50(num_classes=5),
        "vgg16": lambda: tvm.vgg16_bn(num_classes=5),
        "inception_v3": lambda: tvm.inception_v3(num_classes=5, aux_logits=False, init_weights=False),
    }[arch]
    with torch.device("meta"):
        ours, theirs = create_model(arch, in_channels=3), ref()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert sorted(p.numel() for p in ours.parameters()) == sorted(p.numel() for p in theirs.parameters())


def test_plain_and_cbam_ignore_the_mask():
    for name in ("resnet18", "resnet18-cbam"):
        torch.manual_seed(0)
        model = create_model(name).eval()
        image = torch.randn(1, 1, 64, 64)
        with torch.no_grad():
            a = model(image, torch.ones(1, 1, 64, 64))
            b = model(image, torch.zeros(1, 1, 64, 64))
        assert torch.equal(a, b)
    model = create_model("resnet18-ma").eval()
    with torch.no_grad():
        a = model(image, torch.ones(1, 1, 64, 64))
        b = model(image, torch.zeros(1, 1, 64, 64))
    assert not torch.equal(a, b)


def test_input_validation_and_options():
    model = create_model("resnet18-ma", in_channels=3, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32), torch.ones(1, 1, 32, 32, dtype=torch.bool)).shape == (1, 2)
    with pytest.raises(BadInputError):
        model(torch.randn(1, 1, 32, 32), torch.ones(1, 1, 32, 32))  # wrong channels
    with pytest.raises(BadInputError):
        model(torch.randn(1, 3, 32, 32), torch.ones(1, 1, 16, 16))  # mask size
    with pytest.raises(BadInputError):
        model(torch.randn(1, 3, 32, 32))  # MA needs the mask
    with pytest.raises(ValueError):
        create_model("resnet18", num_classes=0)


def test_inception_pads_small_inputs_only():
    model = create_model("inception_v3-ma").eval()
    assert model.min_input_size == 75
    small = model.mask_pyramid(torch.ones(1, 1, 64, 64))
    assert next(iter(small.values())).shape[-1] == 37  # (75 - 3) // 2 + 1
    big = model.mask_pyramid(torch.ones(1, 1, 80, 80))
    assert next(iter(big.values())).shape[-1] == 39
