"""Mask attention must be Eq. (1): maps are receptive-field fractions, features vanish outside them."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from manet_edge.models import create_model
from manet_edge.models.mask_attention import MaskChain, MaskMul, MaskPool, PoolSpec

torch.set_num_threads(1)

ARCHS = ("resnet18", "resnet50", "vgg16", "inception_v3")
SIZE = {"resnet18": 64, "resnet50": 64, "vgg16": 32, "inception_v3": 80}  # inception: >= 75, no padding


@functools.lru_cache(maxsize=None)
def ma_model(arch: str):
    """The ``-ma`` model in eval mode with trained-like BN statistics: folded BNs have biases, as in
    a trained model (fresh BNs have none, and would hide a bias leaking outside the map)."""
    from manet_edge.export.verify import randomize_like_trained

    torch.manual_seed(0)
    return randomize_like_trained(create_model(f"{arch}-ma").eval(), size=SIZE[arch]).eval()


def is_bottleneck(block) -> bool:
    """ResNet bottlenecks multiply once, on the 3x3 conv; their 1x1 conv3 adds a bias outside the map."""
    from manet_edge.models.resnet import Bottleneck

    return isinstance(block, Bottleneck)


def random_mask(n: int, size: int, seed: int) -> torch.Tensor:
    """Two random 'lungs' (rectangles) plus salt noise: large empty areas and ragged edges."""
    g = np.random.default_rng(seed)
    m = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        for _ in range(2):
            h, w = g.integers(size // 6, size // 3, 2)
            y, x = g.integers(0, size // 2, 2)
            m[i, 0, y:y + h, x:x + w] = 1
        m[i, 0][g.random((size, size)) < 0.02] = 1
    return torch.from_numpy(m)


# ---------------------------------------------------------------- brute force, independent of torch
def brute_pool(m: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """For every output position: the share of its zero-padded k/s/p window covered by ``m`` (loops)."""
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel, spec.stride, spec.padding
    h, w = m.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            inside = 0.0
            for a in range(i * sh - ph, i * sh - ph + kh):
                for b in range(j * sw - pw, j * sw - pw + kw):
                    if 0 <= a < h and 0 <= b < w:  # padding is outside the lungs
                        inside += m[a, b]
            out[i, j] = inside / (kh * kw)
    return out


def expected_chains(arch: str) -> list[tuple[tuple[int, int, int], ...]]:
    """Chains of (k, s, p) (square) per MA site, written from the paper's per-architecture rules."""
    sites, chain = [], []

    def pool(k, s, p, site=True):
        chain.append((k, s, p))
        if site:
            sites.append(tuple(chain))

    if arch in ("resnet18", "resnet50"):
        pool(7, 2, 3)
        pool(3, 2, 1, site=False)
        for stage, n in enumerate((2, 2, 2, 2) if arch == "resnet18" else (3, 4, 6, 3)):
            for j in range(n):
                s = 2 if stage > 0 and j == 0 else 1
                pool(3, s, 1)  # basic: conv1 site; bottleneck: the only site (3x3 conv)
                if arch == "resnet18":
                    pool(3, 1, 1)  # conv2 site
                projection = j == 0 and stage > 0 and arch == "resnet18"
                if projection:  # a basic block's projection shortcut is multiplied by its output map
                    sites.append(tuple(chain))
    elif arch == "vgg16":
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            pool(*((2, 2, 0) if v == "M" else (3, 1, 1)), site=v != "M")
    return sites


def to_ksp(spec: PoolSpec):
    k, s, p = spec.kernel, spec.stride, spec.padding
    return (k[0], s[0], p[0]) if k[0] == k[1] and s[0] == s[1] and p[0] == p[1] else (k, s, p)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vgg16"])
def test_site_chains_follow_paper_rules(arch):
    model = ma_model(arch)
    got = [tuple(to_ksp(s) for s in site.chain) for site in model.ma_sites()]
    # a basic block's projection shortcut shares its block's map: its site repeats the block's last chain
    assert got == expected_chains(arch)


def test_inception_module_chains():
    model = ma_model("inception_v3")
    by_block: dict[str, set] = {}
    for site in model.ma_sites():
        block = site.name.split(".")[0]
        by_block.setdefault(block, set()).add(tuple(to_ksp(s) for s in site.chain))
    assert all(len(v) == 1 for v in by_block.values()), "one map per block / module"
    last = {b: next(iter(v)) for b, v in by_block.items()}
    stem = ((3, 2, 0), (3, 1, 0), (3, 1, 1), (3, 2, 0), (3, 1, 0), (3, 2, 0))
    assert last["Conv2d_3b_1x1"] == stem[:4]  # 1x1 conv: map unchanged
    assert last["Conv2d_4a_3x3"] == stem[:5]
    a5 = stem + ((5, 1, 2),)
    assert last["Mixed_5b"] == a5 and last["Mixed_5d"] == a5 + ((5, 1, 2),) * 2
    b = last["Mixed_5d"] + ((3, 1, 1), (3, 2, 0))
    assert last["Mixed_6a"] == b
    c = (((7, 1), (1, 1), (3, 0)), ((1, 7), (1, 1), (0, 3))) * 2
    assert last["Mixed_6b"] == b + c and last["Mixed_6e"] == b + c * 4
    d = last["Mixed_6e"] + (((1, 7), (1, 1), (0, 3)), ((7, 1), (1, 1), (3, 0)), (3, 2, 0))
    assert last["Mixed_7a"] == d
    assert last["Mixed_7c"] == d + ((3, 1, 1),) * 4
    # every branch of a module is a site, and all of them use the module map
    assert sum(s.name.startswith("Mixed_7b.") for s in model.ma_sites()) == 6


@pytest.mark.parametrize("arch", ARCHS)
def test_maps_equal_brute_force_receptive_field_fraction(arch):
    """(a) every site's map = composed 'fraction of the window inside the mask', by explicit loops."""
    model = ma_model(arch)
    size = SIZE[arch]
    mask = random_mask(2, size, seed=1)
    pyramid = model.mask_pyramid(mask)
    sites = model.ma_sites()
    assert list(pyramid) == [s.name for s in sites]
    for n in range(mask.shape[0]):
        memo = {(): mask[n, 0].numpy().astype(np.float64)}
        for site in sites:
            for i in range(1, len(site.chain) + 1):
                if site.chain[:i] not in memo:
                    memo[site.chain[:i]] = brute_pool(memo[site.chain[: i - 1]], site.chain[i - 1])
            want = memo[site.chain]
            got = pyramid[site.name][n, 0].numpy()
            assert got.shape == want.shape, site.name
            np.testing.assert_allclose(got, want, atol=2e-6, err_msg=site.name)
    # the first site is literally the share of mask pixels in the stem conv's window
    first = sites[0]
    assert len(first.chain) == 1
    k = first.chain[0].kernel
    counts = brute_pool(mask[0, 0].numpy().astype(np.float64), first.chain[0]) * k[0] * k[1]
    assert np.allclose(counts, np.round(counts))


@pytest.mark.parametrize("arch", ARCHS)
def test_all_zero_mask_zeroes_features(arch):
    """(b) a zero mask silences the first MA block, and every feature after it carries no image
    content: exactly zero, or (after ResNet bottlenecks, whose 1x1 conv3 adds its bias) the same
    for any image."""
    model = ma_model(arch)
    size = SIZE[arch]
    image = torch.randn(2, 1, size, size)
    zero = torch.zeros(2, 1, size, size)
    name, first = model.masked_blocks()[0]
    captured = {}

    def hook(mod, inp, out):  # returns None: a forward hook's return value would replace the output
        captured["x"] = out[0].detach().clone()

    handle = first.register_forward_hook(hook)
    try:
        with torch.no_grad():
            feats = model.forward_features(image, zero)
    finally:
        handle.remove()
    assert captured["x"].abs().max().item() == 0.0, name
    if any(is_bottleneck(b) for _, b in model.masked_blocks()):
        with torch.no_grad():
            other = model.forward_features(torch.randn(2, 1, size, size), zero)
        assert torch.equal(feats, other) and feats.abs().max().item() > 0  # bias only, no image content
    else:
        assert feats.abs().max().item() == 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_features_zero_where_map_zero(arch):
    """(c) at every site, features vanish wherever the map is zero; so do block outputs, except after a
    ResNet bottleneck, whose output there holds only bias terms: the same for any image."""
    model = ma_model(arch)
    size = SIZE[arch]
    mask = random_mask(2, size, seed=2)
    image = torch.randn(2, 1, size, size)
    site_names = {mod: n for n, mod in model.named_modules() if isinstance(mod, MaskMul)}
    block_names = {mod: n for n, mod in model.masked_blocks()}
    at_site, site_maps, at_block = {}, {}, {}

    def site_hook(mod, inp, out):
        at_site[site_names[mod]] = out.detach().clone()  # before the in-place ReLU
        site_maps[site_names[mod]] = inp[1].detach().clone()

    def block_hook(mod, inp, out):
        at_block[block_names[mod]] = out[0].detach().clone()

    handles = [m.register_forward_hook(site_hook) for m in site_names]
    handles += [m.register_forward_hook(block_hook) for m in block_names]
    try:
        with torch.no_grad():
            model(torch.randn(2, 1, size, size), mask)  # another image, the same mask
            second = dict(at_block)
            model(image, mask)
    finally:
        for h in handles:
            h.remove()
    pyramid, block_maps = model.mask_pyramid(mask), model.block_maps(mask)
    assert set(at_site) == set(pyramid)
    zeros_seen = 0
    for name, feats in at_site.items():
        assert torch.equal(site_maps[name], pyramid[name]), f"forward used another map at {name}"
        outside = (pyramid[name] == 0).expand_as(feats)
        zeros_seen += int(outside.sum())
        assert feats[outside].abs().max().item() == 0.0 if outside.any() else True, name
        assert feats[~outside].abs().sum() > 0, name
    modules = dict(model.masked_blocks())
    for name, feats in at_block.items():
        outside = (block_maps[name] == 0).expand_as(feats)
        if not outside.any():
            continue
        if is_bottleneck(modules[name]):
            assert torch.equal(feats[outside], second[name][outside]), name
            assert not torch.equal(feats[~outside], second[name][~outside]), name
        else:
            assert feats[outside].abs().max().item() == 0.0, name
    assert zeros_seen > 0, "the test masks must leave zero-map regions"


@pytest.mark.parametrize("arch", ARCHS)
def test_ma_adds_no_parameters(arch):
    """(d) identical parameters and state dict keys; the pyramid is parameter-free and deterministic."""
    with torch.device("meta"):
        plain, ma = create_model(arch), create_model(f"{arch}-ma")
    assert sum(p.numel() for p in ma.parameters()) == sum(p.numel() for p in plain.parameters())
    assert list(ma.state_dict()) == list(plain.state_dict())
    for mod in ma.modules():
        if isinstance(mod, (MaskPool, MaskMul, MaskChain)):
            assert not list(mod.parameters()) and not list(mod.buffers())
    model = ma_model(arch)
    mask = random_mask(1, SIZE[arch], seed=3)
    a, b = model.mask_pyramid(mask), model.mask_pyramid(mask.clone())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not plain.ma_sites() and not plain.mask_pyramid(torch.ones(1, 1, 8, 8, device="meta"))


def test_pool_spec_and_mask_pool_count_padding_as_outside():
    spec = PoolSpec.of(torch.nn.MaxPool2d(3, 2, 1))
    assert spec == PoolSpec.make(3, 2, 1) and spec.moves_field
    assert not PoolSpec.of(torch.nn.Conv2d(4, 4, 1)).moves_field
    assert PoolSpec.of(torch.nn.Conv2d(4, 4, (1, 7), padding=(0, 3))).kernel == (1, 7)
    ones = torch.ones(1, 1, 4, 4)
    out = MaskPool(PoolSpec.make(3, 1, 1))(ones)
    assert out[0, 0, 0, 0].item() == pytest.approx(4 / 9)  # corner: 4 of 9 window pixels are real
    assert out[0, 0, 1, 1].item() == 1.0
    assert len(MaskChain([PoolSpec.make(1), PoolSpec.make(3, 1, 1)]).pools) == 1  # 1x1 emits no pool
    with pytest.raises(ValueError):
        PoolSpec.of(torch.nn.Conv2d(1, 1, 3, dilation=2))
