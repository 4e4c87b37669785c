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


def _disc_prob(size: int, radius: float, centre: tuple[float, float], blur: float = 1.0) -> np.ndarray:
    """A soft disc: probability 0.5 exactly on a circle of ``radius`` (pixel-centre coordinates)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    d = np.clip(np.hypot(yy - centre[0], xx - centre[1]) - radius, -50, 50)
    return (1.0 / (1.0 + np.exp(d / blur))).astype(np.float32)


def test_upsample_mask_follows_the_probability_outline():
    from manet_edge.postprocess import upsample_mask

    size, big = 32, 256
    prob = _disc_prob(size, 9.3, (15.7, 16.2))
    truth = _disc_prob(big, 9.3 * big / size, (15.7 * big / size, 16.2 * big / size)) > 0.5
    mask = clean_mask(prob, PostprocessConfig(min_object_fraction=0, max_hole_fraction=0, keep_largest=0))
    near = upsample_mask(mask, None, (big, big))
    refined = upsample_mask(mask, prob, (big, big), 0.5)

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    assert near.shape == refined.shape == (big, big) and refined.dtype == bool
    assert iou(refined, truth) > iou(near, truth) + 0.01
    assert iou(refined, truth) > 0.97


def test_upsample_mask_keeps_what_the_clean_up_removed_or_filled():
    from manet_edge.postprocess import upsample_mask

    prob = _disc_prob(64, 14, (32, 32))
    prob[30:33, 30:33] = 0.0  # a small hole inside the lung: filled by the clean-up
    prob[2:4, 2:4] = 0.9  # a speck far outside: removed by the clean-up
    cfg = PostprocessConfig(min_object_fraction=0.002, max_hole_fraction=0.01, keep_largest=2)
    mask = clean_mask(prob, cfg)
    assert mask[31, 31] and not mask[2, 2]
    up = upsample_mask(mask, prob, (128, 128), cfg.threshold)
    assert up[62:66, 62:66].all()  # the hole stays filled
    assert not up[4:8, 4:8].any()  # the speck stays removed
    same = upsample_mask(mask, prob, (64, 64), cfg.threshold)
    assert np.array_equal(same, mask)  # same size: the cleaned mask itself
