"""Launched by test_ddp.py under torchrun: a few DDP steps, then every rank saves the weights it holds."""

import sys
from pathlib import Path

import torch

from manet_edge.config import SegModelConfig
from manet_edge.models.unet import create_segmenter
from manet_edge.train.dist import init_distributed, shutdown
from manet_edge.train.loop import preset
from manet_edge.train.seg import train_segmenter

data, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(1)
info = init_distributed("cpu")
cfg = preset("seg-cpu", epochs=1, batch_size=2, image_size=64, max_steps_per_epoch=3)
model_cfg = SegModelConfig(decoder_channels=(16, 16, 8, 8), image_size=64)
torch.manual_seed(1000 + info.rank)  # different initial weights per rank: DDP must broadcast rank 0's
model = create_segmenter(model_cfg)
train_segmenter(data, out, cfg, model_cfg, info, splits_path=out / "splits.json", quiet=True, model=model)
torch.save({"world": info.world_size, "state": model.state_dict()}, out / f"rank{info.rank}.pt")
shutdown(info)
