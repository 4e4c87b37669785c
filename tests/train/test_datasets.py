from collections import Counter

import pytest

from manet_edge.datasets import Item, find_cls_items, find_seg_pairs, get_splits, load_splits, make_splits
from manet_edge.errors import BadInputError


def test_seg_pairs_read_manifest_and_source(seg_root):
    items = find_seg_pairs(seg_root)
    assert len(items) == 20
    assert {it.source for it in items} == {"ieee", "quex"}
    assert items[0].patient_id.startswith("p") and items[0].mask.startswith("seg/masks/")


def test_missing_mask_is_named(seg_root):
    (seg_root / "seg/masks/ieee_001.png").unlink()
    with pytest.raises(BadInputError, match="ieee_001.png"):
        find_seg_pairs(seg_root)


def test_splits_patient_disjoint_stratified_and_seeded():
    items = [Item(path=f"{c}/{i}.png", label=c, patient_id=f"{c}{i // 3}") for c in "abc" for i in range(60)]
    s1, s2 = make_splits(items, seed=3), make_splits(items, seed=3)
    assert s1 == s2 and make_splits(items, seed=4) != s1
    assert sorted(sum(s1.values(), [])) == sorted(it.path for it in items)
    pid = {it.path: it.patient_id for it in items}
    owners = {}
    for split, paths in s1.items():
        for p in paths:
            assert owners.setdefault(pid[p], split) == split
    for c in "abc":
        n = Counter(p.split("/")[0] for p in s1["train"])[c]
        assert 45 <= n <= 51  # 8:1:1 of 60, in whole patients of 3


def test_patient_with_two_classes_stays_in_one_split():
    items = [Item(path=f"x{i}.png", label="bacterial" if i % 2 else "viral", patient_id=f"p{i // 4}") for i in range(80)]
    splits = make_splits(items, seed=0)
    where = {p: s for s, ps in splits.items() for p in ps}
    for i in range(0, 80, 4):
        assert len({where[f"x{j}.png"] for j in range(i, i + 4)}) == 1


def test_split_file_is_reused_and_checked(tmp_path, cls_root):
    items = find_cls_items(cls_root)
    path = tmp_path / "s.json"
    first = get_splits(items, path, root=cls_root, task="cls")
    assert load_splits(path) == first
    assert get_splits(items, path, root=cls_root, task="cls", seed=99) == first  # file wins over the seed
    with pytest.raises(BadInputError, match="not in the data"):
        get_splits(items[:5], path, root=cls_root, task="cls")
