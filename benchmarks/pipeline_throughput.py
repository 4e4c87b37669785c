"""End-to-end ``infer`` throughput versus the models' own time (issue 6, criterion 4).

Measures, in one process, back to back, ``--repeats`` times:
- the bound (the issue's definition): median seconds of ``seg.infer`` + ``cls.infer`` on a batch of
  ``B`` ready inputs, one call at a time, with the backend's defaults (every core; ONNX Runtime's
  spin-waiting on), giving
  ``B / (t_seg(B) + t_cls(B))`` images/s;
- models only: the pipeline's own runners and streams (``manet-edge infer``'s choice, or
  ``--streams``) calling the two models on ready inputs, with no decoding or clean-up;
- end-to-end: :class:`manet_edge.pipeline.Pipeline` over image files on disk (decode,
  pre-processing, post-processing, softmax included; no mask/overlay files);
and reports ``efficiency = end-to-end / bound`` (the bar is >= 0.90) and, stricter,
``end-to-end / models only``. Results go to
``benchmarks/results/pipeline_throughput_<backend>[_<tag>].json`` (+ ``.md``).

Run: ``python -m manet_edge.benchmarks.pipeline_throughput [--seg S.onnx --cls C.onnx]
[--folder DIR | --images N --image-size PX] [--batch 1 4 8] [--backend onnxruntime]``
(also runnable as ``python benchmarks/pipeline_throughput.py`` from the repo root).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

BAR = 0.90


def _cpu_name() -> str:
    """The CPU model (:func:`manet_edge.cpu.cpu_model`, the one CPU-name reader)."""
    from manet_edge.cpu import cpu_model

    return cpu_model()


def synthetic_folder(folder: Path, n: int, size: int) -> Path:
    """``n`` chest-X-ray-like 8-bit PNGs of ``size`` px (like shared/data: 512 px, mode L)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        lungs = np.zeros((size, size), np.float32)
        for cx in (0.32, 0.68):
            lungs += (((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2 <= 1) * rng.uniform(0.3, 0.5)
        img = np.clip(0.75 - 0.3 * ((xx - 0.5) / 0.5) ** 2 - lungs + rng.normal(0, 0.03, (size, size)), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"cxr_{i:04d}.png")
    return folder


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _feeds(seg, cls, batch: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(1)
    s, c = seg.card.input_size, cls.card.input_size
    seg_feed = {"image": rng.random((batch, seg.card.in_channels, s, s), dtype=np.float32)}
    mask = np.zeros((batch, 1, c, c), np.float32)
    mask[:, :, c // 4: 3 * c // 4, c // 8: 7 * c // 8] = 1
    cls_feed = {"image": rng.uniform(-1, 1, (batch, cls.card.in_channels, c, c)).astype(np.float32)}
    if "mask" in cls.input_shapes:
        cls_feed["mask"] = mask
    return seg_feed, cls_feed


def model_time(seg, cls, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each model on a batch of ``batch`` realistic inputs: the bound."""
    seg_feed, cls_feed = _feeds(seg, cls, batch)
    t_seg = _median_time(lambda: seg.infer(seg_feed), repeats)
    t_cls = _median_time(lambda: cls.infer(cls_feed), repeats)
    return {"seg_s_per_batch": t_seg, "cls_s_per_batch": t_cls,
            "bound_images_per_s": batch / (t_seg + t_cls)}


def streams_model_rate(seg, cls, batch: int, streams: int, calls: int) -> float:
    """Images/s of ``streams`` threads each calling segmenter then classifier ``calls`` times on
    ready inputs: the models alone, run the way the pipeline runs them (no decode, no clean-up)."""
    import threading

    seg_feed, cls_feed = _feeds(seg, cls, batch)
    seg.infer(seg_feed), cls.infer(cls_feed)

    def loop() -> None:
        for _ in range(calls):
            seg.infer(seg_feed)
            cls.infer(cls_feed)

    threads = [threading.Thread(target=loop) for _ in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return streams * calls * batch / (time.perf_counter() - t0)


def end_to_end(pipe, files) -> dict[str, Any]:
    """One timed pipeline run over ``files``: images/s, and how busy the model calls kept it."""
    from manet_edge.pipeline import StageTimes

    pipe.times = StageTimes()
    results = pipe.run(files)
    infer_s = pipe.times.seconds["seg_infer"] + pipe.times.seconds["cls_infer"]
    return {"images_per_s": len(files) / pipe.wall_s, "model_busy": infer_s / pipe.wall_s / pipe.config.streams,
            "classified": sum(r.probabilities is not None for r in results),
            "failed": sum(not r.ok for r in results), "stages": pipe.times.to_dict()}


def measure(pipe, ref, files, batch: int, repeats: int, model_repeats: int) -> dict[str, Any]:
    """``repeats`` triples (bound, streams model-only rate, end-to-end), measured back to back.

    ``ref`` is the (segmenter, classifier) pair at the backend's default threads, called one after
    the other: the issue's bound ``B / (t_seg + t_cls)``. The efficiency is the median of the
    per-triple ratios, so slow drifts in background load affect both sides of each ratio alike.
    ``models_only`` is the pipeline's own runners and streams without any CPU stage: the best
    the models can do when run the way the pipeline runs them; ``efficiency_vs_models_only`` is
    the stricter ratio.
    """
    pipe.run(files[: max(2, 2 * batch * pipe.config.streams)])  # warm-up: threads, allocator, caches
    calls = max(2, len(files) // (batch * pipe.config.streams))
    triples = []
    for _ in range(repeats):
        mt = model_time(*ref, batch, model_repeats)
        only = streams_model_rate(pipe.seg, pipe.cls, batch, pipe.config.streams, calls)
        e2e = end_to_end(pipe, files)
        triples.append((mt, only, e2e, e2e["images_per_s"] / mt["bound_images_per_s"]))
    mid = sorted(triples, key=lambda p: p[3])[len(triples) // 2]
    mt, only, e2e, eff = mid
    # One call on the pipeline's runners (one thread each when streams > 1): how well one call
    # at a time uses every core is t(pipeline runners) / (cores x t(bound runners)).
    own = model_time(pipe.seg, pipe.cls, batch, model_repeats)
    strict = statistics.median(t[2]["images_per_s"] / t[1] for t in triples)
    return {"batch": batch, "streams": pipe.config.streams, **mt,
            "pipeline_runner_seg_s_per_batch": own["seg_s_per_batch"],
            "pipeline_runner_cls_s_per_batch": own["cls_s_per_batch"], "models_only_images_per_s": only,
            "e2e_images_per_s": e2e["images_per_s"], "efficiency": eff,
            "efficiencies": [round(p[3], 4) for p in triples],
            "efficiency_vs_models_only": strict, "model_busy": e2e["model_busy"],
            "classified": e2e["classified"], "failed": e2e["failed"], "stages": e2e["stages"],
            "passes_bar": eff >= BAR and e2e["classified"] == len(files)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from manet_edge.assets import model_paths
    from manet_edge.commands.infer import plan_streams
    from manet_edge.pipeline import Pipeline, PipelineConfig, walk_folder
    from manet_edge.results import library_versions
    from manet_edge.runtime import create_runner
    from manet_edge.runtime.backends import backend_info, runner_kwargs

    if args.seg and args.cls:
        seg_path, cls_path = Path(args.seg), Path(args.cls)
    else:
        seg_path, cls_path = model_paths(Path(args.models) if args.models else None, ".onnx")
    with tempfile.TemporaryDirectory(prefix="manet-bench-") as tmp:
        folder = Path(args.folder) if args.folder else synthetic_folder(Path(tmp), args.images, args.image_size)
        files = walk_folder(folder)
        if not files:
            raise SystemExit(f"no files in {folder}")
        streams, threads = plan_streams(args.backend, args.streams, args.threads)

        def runners(n_threads: int | None, n_streams: int, spin: bool):
            kw: dict[str, Any] = runner_kwargs(args.backend, threads=n_threads, streams=n_streams, spin=spin)
            return (create_runner(seg_path, args.backend, args.precision, name="segmenter", **kw),
                    create_runner(cls_path, args.backend, args.precision, name="classifier", **kw))

        # The bound: one call at a time with the backend's defaults (every core; ONNX Runtime spins).
        ref = runners(args.threads, 1, True)
        rows = []
        for r in ref:
            r.activate()
        try:
            for batch in args.batch:
                seg, cls = runners(threads, streams, args.spin)
                with Pipeline(seg, cls, PipelineConfig(batch=batch, workers=args.workers, streams=streams)) as pipe:
                    row = measure(pipe, ref, files, batch, args.repeats, args.model_repeats)
                    precision = seg.precision
                rows.append(row)
                print(f"batch {batch:3d}: model bound {row['bound_images_per_s']:.2f} img/s "
                      f"(seg {1e3 * row['seg_s_per_batch']:.1f} ms + cls {1e3 * row['cls_s_per_batch']:.1f} ms per batch), "
                      f"end-to-end {row['e2e_images_per_s']:.2f} img/s with {streams} stream(s) x {threads or 'default'} "
                      f"thread(s) -> {100 * row['efficiency']:.1f}% (runs {row['efficiencies']}); models alone in "
                      f"the same streams {row['models_only_images_per_s']:.2f} img/s -> "
                      f"{100 * row['efficiency_vs_models_only']:.1f}%; one call on the pipeline's runners: seg "
                      f"{1e3 * row['pipeline_runner_seg_s_per_batch']:.1f} ms + cls "
                      f"{1e3 * row['pipeline_runner_cls_s_per_batch']:.1f} ms; "
                      f"{row['classified']}/{len(files)} classified",
                      flush=True)
        finally:
            for r in ref:
                r.deactivate()
    return {
        "benchmark": "pipeline_throughput", "bar": BAR,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "backend": args.backend, "precision": precision, "bound_threads": args.threads,
        "streams": streams, "threads_per_stream": threads, "workers": args.workers,
        "ort_spin": args.spin if "spin" in backend_info(args.backend).runner_options else None,
        "models": {"segmenter": str(seg_path), "classifier": str(cls_path)},
        "inputs": {"folder": args.folder, "images": len(files),
                   "image_size": None if args.folder else args.image_size},
        "libraries": library_versions(), "rows": rows,
    }


def _markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Pipeline throughput ({doc['backend']}, {doc['precision']})", "",
             f"{doc['device']['cpu']}, {doc['device']['cpu_count']} CPUs; {doc['inputs']['images']} images; "
             f"models {doc['models']['segmenter']}, {doc['models']['classifier']}; {doc['created']}", "",
             f"Bound: one model call at a time, {doc['bound_threads'] or 'the backend default'} thread(s) per call. "
             f"Pipeline: {doc['streams']} stream(s), {doc['threads_per_stream'] or 'default'} thread(s) per call.", "",
             "| batch | seg ms/batch | cls ms/batch | same, pipeline's runners | bound img/s "
             "| models only, pipeline streams img/s | end-to-end img/s "
             "| end-to-end / bound (median run) | end-to-end / models only | >= 90% of bound |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in doc["rows"]:
        lines.append(f"| {r['batch']} | {1e3 * r['seg_s_per_batch']:.1f} | {1e3 * r['cls_s_per_batch']:.1f} | "
                     f"{1e3 * r['pipeline_runner_seg_s_per_batch']:.1f} + "
                     f"{1e3 * r['pipeline_runner_cls_s_per_batch']:.1f} | {r['bound_images_per_s']:.2f} | {r['models_only_images_per_s']:.2f} | "
                     f"{r['e2e_images_per_s']:.2f} | {100 * r['efficiency']:.1f}% | "
                     f"{100 * r['efficiency_vs_models_only']:.1f}% | {'yes' if r['passes_bar'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seg", help="segmenter model (default: --models or the bundled one)")
    p.add_argument("--cls", help="classifier model")
    p.add_argument("--models", help="folder with segmenter.onnx and classifier.onnx")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "openvino"))
    p.add_argument("--precision", default=None)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--folder", help="real images to run (default: synthetic PNGs)")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=None,
                   help="threads per model call for the bound (default: the backend's, i.e. every core)")
    p.add_argument("--streams", type=int, default=0,
                   help="pipeline model streams (0: as `manet-edge infer` picks them)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--spin", action=argparse.BooleanOptionalAction, default=False,
                   help="onnxruntime intra-op spin-waiting in the pipeline's runners (the infer command turns it "
                        "off; the bound's runners keep onnxruntime's default, on)")
    p.add_argument("--repeats", type=int, default=5, help="(bound, end-to-end) pairs per batch size")
    p.add_argument("--model-repeats", type=int, default=10)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--tag", default="", help="suffix for the result file names")
    args = p.parse_args(argv)
    doc = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"pipeline_throughput_{args.backend}{'_' + args.tag if args.tag else ''}"
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / f"{stem}.md").write_text(_markdown(doc))
    print(f"wrote {out / stem}.json/.md")
    return 0 if all(r["passes_bar"] for r in doc["rows"]) else 1


if __name__ == "__main__":
    if __package__ in (None, ""):  # `python benchmarks/pipeline_throughput.py` from a checkout
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
