"""Train the bundled default segmenter (run from the repo root; needs the 'train' extra and ../shared/data).

Equivalent CLI:  manet-edge train seg --data ../shared/data --out runs/seg_default --preset cpu --splits splits/seg.json \
                     --size 224 --epochs 60
(the cpu preset's UNet-ResNet18 at 224 px instead of 192, 60 epochs instead of 40: about an hour
on one core of the 2-core development VM.)
"""
import sys

from cli import main

sys.argv = ["manet-edge", "train", "seg", "--data", "../shared/data", "--out", "runs/seg_default",
            "--preset", "cpu", "--splits", "splits/seg.json", "--size", "224", "--epochs", "60", *sys.argv[1:]]
main()
