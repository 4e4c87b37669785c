"""Train the bundled default segmenter (run from the repo root; needs the 'train' extra and ../shared/data).

Equivalent CLI:  manet-edge train seg --data ../shared/data --out runs/seg_default --preset cpu --splits splits/seg.json
"""
import sys

from cli import main

sys.argv = ["manet-edge", "train", "seg", "--data", "../shared/data", "--out", "runs/seg_default",
            "--preset", "cpu", "--splits", "splits/seg.json", *sys.argv[1:]]
main()
