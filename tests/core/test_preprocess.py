import numpy as np

from manet_edge.preprocess import cls_input, minmax, resize, seg_input


def test_seg_input_range_and_shape():
    x = seg_input(np.random.default_rng(0).uniform(100, 4000, (300, 200)).astype(np.float32), 64)
    assert x.shape == (1, 64, 64) and x.dtype == np.float32
    assert x.min() == 0.0 and abs(x.max() - 1.0) < 1e-6


def test_cls_input_blanks_outside_mask_and_scales_to_pm1():
    rng = np.random.default_rng(0)
    img = rng.uniform(50, 200, (128, 128)).astype(np.float32)
    mask = np.zeros((128, 128), bool)
    mask[32:96, 16:112] = True
    seg, m = cls_input(img, mask, 64)
    assert seg.shape == m.shape == (1, 64, 64)
    assert set(np.unique(m)) == {0.0, 1.0}
    assert np.all(seg[m == 0] == -1.0)
    assert abs(seg.max() - 1.0) < 1e-6 and seg[m == 1].min() > -1.0


def test_constant_image_and_nearest_resize():
    assert np.all(minmax(np.full((4, 4), 7.0), -1, 1) == -1)
    m = np.zeros((10, 10), np.float32)
    m[:, 5:] = 1
    assert set(np.unique(resize(m, 37, nearest=True))) == {0.0, 1.0}
