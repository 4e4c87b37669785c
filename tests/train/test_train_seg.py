import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manet_edge.config import SegModelConfig
from manet_edge.train.checkpoint import build_model_from_checkpoint, load_checkpoint
from manet_edge.train.dist import DistInfo
from manet_edge.train.loop import preset
from manet_edge.train.seg import train_segmenter

TINY = SegModelConfig(decoder_channels=(16, 16, 8, 8), image_size=64)


def test_train_checkpoint_and_resume(seg_root, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    cfg = preset("seg-cpu", epochs=2, batch_size=4, image_size=64, max_steps_per_epoch=2)
    best = train_segmenter(seg_root, out, cfg, TINY, DistInfo(), splits_path=tmp_path / "s.json", quiet=True)
    assert 0.0 <= best["score"] <= 1.0
    ck = load_checkpoint(out / "last.pt")
    assert ck["kind"] == "seg" and ck["epoch"] == 1 and ck["model_config"]["image_size"] == 64
    assert ck["train_config"]["epochs"] == 2 and "threshold" in ck["postprocess"]
    model = build_model_from_checkpoint(out / "best.pt")
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    # resume: a 3-epoch run continues at epoch index 2 instead of starting over
    cfg3 = preset("seg-cpu", epochs=3, batch_size=4, image_size=64, max_steps_per_epoch=2)
    train_segmenter(seg_root, out, cfg3, TINY, DistInfo(), splits_path=tmp_path / "s.json", quiet=True, resume=True)
    epochs = [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]


def test_checkpoint_loader_rejects_other_files(tmp_path):
    from manet_edge.errors import ModelError

    bad = tmp_path / "x.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ModelError, match="not a manet-edge checkpoint"):
        load_checkpoint(bad)
    (tmp_path / "y.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a readable"):
        load_checkpoint(tmp_path / "y.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_weights(seg_root, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(worker), str(seg_root), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    params = [k for k in r0["state"] if "running" not in k and "num_batches" not in k]
    assert params
    for k in params:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    # rank 1 started from other weights (seed 1001), and both moved away from rank 0's start
    from manet_edge.models.unet import create_segmenter

    torch.manual_seed(1000)
    init0 = create_segmenter(TINY).state_dict()
    assert any(not torch.equal(init0[k], r0["state"][k]) for k in params)
