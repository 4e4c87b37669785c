import numpy as np

from manet_edge.config import PostprocessConfig
from manet_edge.postprocess import clean_mask, keep_largest_components, lung_fraction, plausibility_flags


def two_lungs(size=100):
    m = np.zeros((size, size), np.float32)
    m[10:90, 10:40] = 0.9
    m[10:90, 60:90] = 0.8
    return m


def test_specks_removed_holes_filled_lungs_kept():
    prob = two_lungs()
    prob[50, 20] = 0.1  # a hole inside the left lung
    prob[2:4, 95:97] = 1.0  # a 4-px speck
    mask = clean_mask(prob)
    assert mask[50, 20] and not mask[3, 96]
    assert mask.sum() == 80 * 30 * 2


def test_keeps_two_largest_components():
    prob = two_lungs()
    prob[92:99, 45:55] = 0.95  # a third blob, bigger than min_object_fraction
    mask = clean_mask(prob, PostprocessConfig(min_object_fraction=0.0))
    assert not mask[95, 50] and mask[50, 20] and mask[50, 70]
    assert keep_largest_components(clean_mask(prob, PostprocessConfig(keep_largest=0)), 3)[95, 50]


def test_threshold_respected_and_large_holes_kept():
    prob = two_lungs()
    prob[20:80, 15:35] = 0.3  # a large hole (20 % of the lung) is a real gap, not noise
    mask = clean_mask(prob)
    assert not mask[50, 25]
    assert clean_mask(prob, PostprocessConfig(threshold=0.25))[50, 25]


def test_plausibility_flags():
    assert plausibility_flags(np.zeros((10, 10), bool)) == ["empty_mask"]
    small = np.zeros((100, 100), bool)
    small[:2, :2] = True
    assert plausibility_flags(small) == ["lung_fraction_low"]
    assert plausibility_flags(np.ones((10, 10), bool)) == ["lung_fraction_high"]
    assert plausibility_flags(clean_mask(two_lungs())) == []
    assert abs(lung_fraction(clean_mask(two_lungs())) - 0.48) < 1e-9
