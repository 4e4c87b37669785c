"""The pipeline's schedulers never drop a queued file, and a stop request ends a run cleanly."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from manet_edge.errors import RunInterrupted
from manet_edge.pipeline import Pipeline, PipelineConfig, walk_folder
from manet_edge.runtime import create_runner


def _pipe(seg, cls, **cfg):
    return Pipeline(create_runner(seg, "onnxruntime", threads=1), create_runner(cls, "onnxruntime", threads=1),
                    PipelineConfig(**{"workers": 2, **cfg}))


def _mixed_folder(folder, synth, pattern):
    """'g' a good image, 'e' a zero-byte file, 'b' a blank image (fails after decoding), in order."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, kind in enumerate(pattern):
        path = folder / f"f{k:03d}.png"
        if kind == "g":
            synth.save_png(path, synth.xray(synth.SIZE, seed=k))
        elif kind == "b":
            synth.save_png(path, np.full((synth.SIZE, synth.SIZE), 7, np.uint8))
        else:
            path.write_bytes(b"")
    return folder


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("batch,workers", [(1, 1), (1, 4), (4, 2), (8, 4)])
def test_a_long_run_of_bad_files_loses_no_row(seg_model, cls_model, tmp_path, synth, streams, batch, workers):
    """2 good files then 40 empty ones (the decode queue drains while files are still queued)."""
    folder = _mixed_folder(tmp_path / "in", synth, "gg" + "e" * 40)
    files = walk_folder(folder)
    with _pipe(seg_model, cls_model, batch=batch, workers=workers, streams=streams) as pipe:
        results = pipe.run(files)
    assert [r.file for r in results] == [f.rel for f in files]
    assert [r.status for r in results] == ["ok"] * 2 + ["error"] * 40


@pytest.mark.parametrize("seed", range(6))
def test_random_mixes_keep_every_row(seg_model, cls_model, tmp_path, synth, seed):
    rng = np.random.default_rng(seed)
    pattern = "".join(rng.choice(list("gge b".replace(" ", "")), size=int(rng.integers(5, 30))))
    folder = _mixed_folder(tmp_path / "in", synth, pattern)
    files = walk_folder(folder)
    for streams in (1, 2):
        with _pipe(seg_model, cls_model, batch=int(rng.integers(1, 5)), workers=int(rng.integers(1, 4)),
                   streams=streams) as pipe:
            results = pipe.run(files)
        assert [r.status for r in results] == ["ok" if c == "g" else "error" for c in pattern], (streams, pattern)


@pytest.mark.parametrize("streams", [1, 2])
def test_stop_ends_the_run_with_the_rows_done(seg_model, cls_model, tmp_path, synth, streams):
    folder = _mixed_folder(tmp_path / "in", synth, "g" * 12)
    files = walk_folder(folder)
    stop = threading.Event()
    seen = []

    def on_result(r):
        seen.append(r.file)
        if len(seen) == 3:
            stop.set()

    with _pipe(seg_model, cls_model, batch=1, streams=streams) as pipe:
        with pytest.raises(RunInterrupted) as info:
            pipe.run(files, on_result=on_result, stop=stop)
        assert 3 <= len(info.value.results) < len(files)
        assert threading.active_count() == 1 or not any(
            t.name.startswith(("manet-stream", "manet-cpu")) for t in threading.enumerate())
        stop.clear()  # the pipeline is still usable afterwards
        assert len(pipe.run(files)) == len(files)


def test_a_stop_before_the_run_runs_nothing(seg_model, cls_model, tmp_path, synth):
    files = walk_folder(_mixed_folder(tmp_path / "in", synth, "ggg"))
    stop = threading.Event()
    stop.set()
    with _pipe(seg_model, cls_model) as pipe:
        with pytest.raises(RunInterrupted) as info:
            pipe.run(files, stop=stop)
    assert info.value.results == {}
