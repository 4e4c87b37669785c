"""The two-stage pipeline stage by stage: decode, preprocess, segment, post-process, classify.

Each image goes through the stage hand-off of docs/CONTRACTS.md **sequentially** (one thread, one
image at a time) with every stage timed on its own by ``perf_counter``:

* ``decode`` - :func:`manet_edge.io.load_image`;
* ``preprocess`` - ``seg_input`` at the segmenter size and the resize to the classifier size;
* ``segment`` - the segmenter runner, batch 1;
* ``postprocess`` - ``stages.mask_from_logits`` (sigmoid, scikit-image clean-up, lung fraction,
  plausibility flags) and ``stages.cls_feed``;
* ``classify`` - the classifier runner, batch 1, and the softmax.

That is the cost of each stage. What ``manet-edge infer`` achieves is a different number: its
:class:`~manet_edge.pipeline.Pipeline` overlaps the CPU stages with the models, so the end-to-end
images/s (reported next to the stages, measured with
:func:`manet_edge.benchmarks.pipeline_throughput.end_to_end`) is better than 1 / the sum of the
stages whenever there is a second core.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from manet_edge.benchmarks.timing import LatencyStats, check_counts

STAGES: tuple[str, ...] = ("decode", "preprocess", "segment", "postprocess", "classify")


def stage_times(seg, cls, files: Sequence[Path], *, runs: int, warmup: int = 1) -> dict[str, Any]:
    """Per-stage and total ms per image over ``runs`` passes of ``files`` (after ``warmup`` passes).

    ``seg`` and ``cls`` are activated runners (:class:`manet_edge.runtime.Runner`).
    """
    from manet_edge import stages
    from manet_edge.io import load_image

    check_counts(warmup, runs)
    post = stages.postprocess_config(seg.card)
    s, c = seg.card.input_size, cls.card.input_size
    samples: dict[str, list[float]] = {k: [] for k in (*STAGES, "total")}
    not_classified = 0

    def one(path: Path, record: bool) -> None:
        nonlocal not_classified
        t = [time.perf_counter()]
        image = load_image(path)
        t.append(time.perf_counter())
        seg_in = stages.seg_feed(image, seg.card)
        small = stages.cls_image(image, cls.card)
        t.append(time.perf_counter())
        logits = seg.infer({"image": seg_in[None]})["logits"]
        t.append(time.perf_counter())
        lung = stages.mask_from_logits(logits[0], post)
        ok = not lung.empty
        if ok:
            feed = stages.cls_batch([stages.cls_feed(small, lung.mask, cls.card)], cls.input_names)
        t.append(time.perf_counter())
        if ok:
            stages.probabilities(cls.infer(feed)["logits"], cls.card)
        t.append(time.perf_counter())
        if record:
            for name, a, b in zip(STAGES, t, t[1:]):
                samples[name].append(b - a)
            samples["total"].append(t[-1] - t[0])
            not_classified += not ok

    for _ in range(warmup):
        for f in files:
            one(f, False)
    for _ in range(runs):
        for f in files:
            one(f, True)
    out = {name: LatencyStats.from_seconds(v).as_dict() for name, v in samples.items()}
    return {"ms_per_image": out, "images": len(files), "runs": runs, "not_classified": not_classified,
            "segmenter_size": s, "classifier_size": c}


def sample_files() -> list[Path]:
    """The bundled sample chest X-rays (PNG)."""
    from manet_edge.assets import samples_dir

    return sorted(p for p in samples_dir().iterdir() if p.suffix.lower() == ".png")


def bench_pipeline(config, log: Callable[[str], None] = print, files: Sequence[Path] | None = None) -> dict[str, Any]:
    """Stage times (and overlapped end-to-end images/s) for each backend in ``config.backends``.

    Stage times use runners with ``config.threads``; the end-to-end rate runs the pipeline as
    ``manet-edge infer`` does by default (its model streams and threads per call).

    Models: ``config.pipeline_models`` (a folder with ``segmenter``/``classifier`` artifacts) or the
    bundled defaults. A backend whose artifacts or library are missing is skipped with the reason.
    """
    from manet_edge.assets import model_paths
    from manet_edge.benchmarks.targets import backend_unavailable
    from manet_edge.commands.infer import _runner_kwargs, plan_streams
    from manet_edge.errors import ManetEdgeError
    from manet_edge.pipeline import Pipeline, PipelineConfig
    from manet_edge.runtime import BACKENDS, create_runner

    files = list(files) if files is not None else sample_files()
    folder = Path(config.pipeline_models) if config.pipeline_models else None
    out: dict[str, Any] = {"models": str(folder) if folder else "bundled", "images": [f.name for f in files],
                           "backends": [], "skipped": []}
    for backend in config.backends:
        reason = backend_unavailable(backend)
        suffix = BACKENDS[backend].artifact_suffix
        paths = None
        if reason is None:
            try:
                paths = model_paths(folder, suffix)
            except ManetEdgeError as exc:
                reason = str(exc)
        if reason is not None or paths is None:
            out["skipped"].append({"what": f"pipeline {backend}", "reason": reason})
            log(f"skip pipeline {backend}: {reason}")
            continue
        seg_path, cls_path = paths
        kw: dict[str, Any] = {"threads": config.threads} if "threads" in BACKENDS[backend].runner_options else {}
        try:
            seg = create_runner(seg_path, backend, None, name="segmenter", **kw)
            cls = create_runner(cls_path, backend, None, name="classifier", **kw)
            with Pipeline(seg, cls, PipelineConfig(batch=1)):
                row = {"backend": backend, "precision": seg.precision,
                       "segmenter": {"path": str(seg_path), "model": seg.card.model_name},
                       "classifier": {"path": str(cls_path), "model": cls.card.model_name}}
                row.update(stage_times(seg, cls, files, runs=config.pipeline_runs, warmup=1))
            # End to end as `manet-edge infer` runs it by default (its streams and threads).
            streams, threads = plan_streams(backend, 0, None)
            ekw = _runner_kwargs(backend, threads, streams)
            with Pipeline(create_runner(seg_path, backend, None, name="segmenter", **ekw),
                          create_runner(cls_path, backend, None, name="classifier", **ekw),
                          PipelineConfig(batch=1, streams=streams)) as pipe:
                row["overlapped"] = {**_overlapped(pipe, files), "streams": streams, "threads": threads}
        except ManetEdgeError as exc:
            out["skipped"].append({"what": f"pipeline {backend}", "reason": str(exc)})
            log(f"skip pipeline {backend}: {exc}")
            continue
        ms = row["ms_per_image"]
        log(f"pipeline {backend}: " + ", ".join(f"{k} {ms[k]['median_ms']:.1f}" for k in (*STAGES, "total"))
            + f" ms/image; overlapped {row['overlapped']['images_per_s']:.2f} img/s")
        out["backends"].append(row)
    return out


def _overlapped(pipe, files: Sequence[Path]) -> dict[str, Any]:
    """End-to-end images/s of the overlapped pipeline over ``files`` (one warm-up pass, one timed)."""
    from manet_edge.benchmarks.pipeline_throughput import end_to_end
    from manet_edge.pipeline import InputFile

    items = [InputFile(Path(f), Path(f).name) for f in files]
    pipe.run(items)
    res = end_to_end(pipe, items)
    return {"images_per_s": round(res["images_per_s"], 3), "model_busy": round(res["model_busy"], 3),
            "classified": res["classified"], "failed": res["failed"]}
