"""The two-stage MANet pipeline over any pair of runners, with overlapped CPU work and batching.

Per image (the stage hand-off of docs/CONTRACTS.md, written once in :mod:`manet_edge.stages`):
decode (:func:`manet_edge.io.load_image`) -> ``stages.seg_feed`` -> segmenter ->
``stages.lung_probability`` (sigmoid at the segmenter size S) -> ``stages.clean_lung_mask`` at
S x S (the segmenter card's :class:`PostprocessConfig`, lung fraction and plausibility flags) ->
``stages.cls_feed`` (mask resized nearest) -> classifier -> ``stages.probabilities`` (softmax). Saved masks are the S x S cleaned mask brought to the input's resolution by
``postprocess.upsample_mask`` (nearest, the outline refined from the probability map).

Two schedules. With ``streams > 1`` (:meth:`Pipeline._run_streams`), N threads each take the next
batch through every stage with their own model calls, so one stream's CPU work overlaps the
others' model calls (CPU backends; the runners must be ``concurrent``). With one stream, the
overlap is a staged pipeline: the calling thread only runs the models, in batches of
``batch``; a small thread pool does the CPU stages (decode + seg pre-processing, mask
post-processing + cls pre-processing, softmax + mask/overlay files) for the neighbouring
batches at the same time. ONNX Runtime and OpenVINO release the GIL while a model runs, and
Pillow/scikit-image release it in their C loops, so the models are kept busy as long as the CPU
stages take less time than the models. Items advance in input order; at most about
``2 * batch + workers`` images are in flight, and each keeps only small arrays (the image at the
classifier size, the mask at the segmenter size).

Policy for implausible masks: an empty mask (no lung found) is not classified, the row has
``status=error`` and flag ``empty_mask``; a lung fraction outside the card's
``[min_lung_fraction, max_lung_fraction]`` is classified, with ``status=ok`` and flag
``lung_fraction_low`` / ``lung_fraction_high``, and reported by the CLI as a warning.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from manet_edge import CLASSES
from manet_edge.config import PostprocessConfig
from manet_edge.errors import BadInputError, ManetEdgeError, RunInterrupted
from manet_edge import stages
from manet_edge.io import load_image
from manet_edge.preprocess import minmax, resize
from manet_edge.runtime.base import Runner
from manet_edge.stages import (  # noqa: F401  (public here before manet_edge.stages existed)
    check_models,
    postprocess_config,
    probe_classifier,
    sigmoid,
    softmax,
)
from manet_edge.stages import error_message as _message

STAGES = ("decode", "seg_infer", "seg_post", "cls_infer", "finalize")
DISPLAY_MAX_SIDE = 1024
"""Overlays are drawn on a copy of the image scaled down to at most this many pixels a side."""


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline runs (each field is a ``manet-edge infer`` option)."""

    batch: int = 1
    """Images per model call."""
    workers: int = 0
    """CPU threads for decoding and pre/post-processing (0: one per core, at most 4)."""
    keep_display: bool = False
    """Keep a down-scaled 8-bit copy of each image (for overlays)."""
    keep_prob: bool = False
    """Keep the S x S probability map until the outputs are written (for saved masks/overlays)."""
    heatmaps: bool = False
    """Compute class-activation maps (needs the classifier's ``features`` output; docs/trust.md)."""
    checks: bool = True
    """Apply the input-domain gate (:mod:`manet_edge.gate`): DICOM tags, polarity, orientation and
    the card's out-of-distribution score, when it has one."""
    streams: int = 1
    """Model streams. 1: the models run in the calling thread and the worker pool overlaps the CPU
    stages with them. N > 1: N threads each take the next ``batch`` images through every stage
    (decode, segmenter, clean-up, classifier, outputs), so one stream's CPU work overlaps the
    others' model calls; give each model call about cores / N threads. Needs runners whose
    ``concurrent`` is true (ONNX Runtime, OpenVINO)."""

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise BadInputError(f"batch must be >= 1, got {self.batch}")
        if self.workers < 0:
            raise BadInputError(f"workers must be >= 0, got {self.workers}")
        if self.streams < 1:
            raise BadInputError(f"streams must be >= 1, got {self.streams}")

    @property
    def n_workers(self) -> int:
        return self.workers or max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class InputFile:
    """A file to run: its path, and its path relative to the input folder (posix; the CSV key).

    ``error`` is set for an entry that could not even be listed (an unreadable sub-folder).
    """

    path: Path
    rel: str
    error: str = ""


@dataclass(frozen=True)
class ImageResult:
    """One output row (see :data:`manet_edge.results.CSV_COLUMNS`)."""

    file: str
    status: str
    error: str = ""
    prediction: str = ""
    probabilities: tuple[float, ...] | None = None
    lung_fraction: float | None = None
    flags: tuple[str, ...] = ()
    ood_score: float | None = None
    heat_in_lung: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class WorkItem:
    """Mutable per-image state while an image moves through the stages."""

    index: int
    src: InputFile
    orig_shape: tuple[int, int] = (0, 0)
    seg_in: np.ndarray | None = None
    cls_image: np.ndarray | None = None
    display: np.ndarray | None = None
    prob: np.ndarray | None = None
    mask: np.ndarray | None = None
    cls_feed: tuple[np.ndarray, np.ndarray] | None = None
    probabilities: np.ndarray | None = None
    lung_fraction: float | None = None
    flags: list[str] = field(default_factory=list)
    error: str = ""
    logits: np.ndarray | None = None
    features: np.ndarray | None = None
    heat: np.ndarray | None = None
    ood_score: float | None = None
    heat_in_lung: float | None = None

    def result(self) -> ImageResult:
        probs = None if self.probabilities is None else tuple(float(p) for p in self.probabilities)
        pred = "" if probs is None else CLASSES[int(np.argmax(self.probabilities))]
        return ImageResult(file=self.src.rel, status="error" if self.error else "ok", error=self.error,
                           prediction=pred, probabilities=probs, lung_fraction=self.lung_fraction,
                           flags=tuple(self.flags), ood_score=self.ood_score, heat_in_lung=self.heat_in_lung)


class StageTimes:
    """Thread-safe per-stage accumulators: seconds, images and calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = {s: 0.0 for s in STAGES}
        self.images = {s: 0 for s in STAGES}
        self.calls = {s: 0 for s in STAGES}

    def add(self, stage: str, seconds: float, images: int = 1) -> None:
        with self._lock:
            self.seconds[stage] += seconds
            self.images[stage] += images
            self.calls[stage] += 1

    def to_dict(self) -> dict[str, dict[str, float]]:
        out = {}
        for s in STAGES:
            n = self.images[s]
            out[s] = {"total_s": round(self.seconds[s], 6), "images": n, "calls": self.calls[s],
                      "ms_per_image": round(1e3 * self.seconds[s] / n, 4) if n else None}
        return out


def _within(real: str, roots: Sequence[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def walk_folder(folder: Path, *, exclude: Sequence[Path] = ()) -> list[InputFile]:
    """Every file under ``folder``, recursively, sorted by relative path.

    Hidden entries (names starting with '.') are skipped, and so is anything whose *real* path
    (symbolic links resolved) lies under ``exclude`` (the output folder), however either folder
    was reached: ``--out`` given as a link into the input folder, the input given as a link, a
    link inside the input pointing at the output. Symbolic links to files and to folders are
    followed; each real folder is walked once (no cycles, no duplicates). A sub-folder that
    cannot be listed becomes an entry with ``error`` set (so it is reported, not silently
    skipped). Names are kept as the operating system gives them (bytes that are not UTF-8 as
    ``surrogateescape`` characters), so every file can be opened again.
    """
    folder = Path(folder)
    excluded = [os.path.realpath(e) for e in exclude]
    seen = {os.path.realpath(folder)}
    found: list[InputFile] = []

    def unlistable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        rel = where.relative_to(folder).as_posix() if where != folder else "."
        found.append(InputFile(where, rel + "/", f"cannot list this folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlistable, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen or _within(real, excluded):
                continue
            seen.add(real)
            keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if excluded and _within(os.path.realpath(p), excluded):
                continue
            found.append(InputFile(p, p.relative_to(folder).as_posix()))
    return sorted(found, key=lambda f: f.rel)


def _display_copy(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    scale = min(1.0, DISPLAY_MAX_SIDE / max(h, w))
    small = resize(image, (max(1, round(h * scale)), max(1, round(w * scale)))) if scale < 1 else image
    return (minmax(small) * 255.0 + 0.5).astype(np.uint8)


Artifacts = Callable[[WorkItem, PostprocessConfig], None]


class Pipeline:
    """Segmenter + classifier runners, run over files with overlapped CPU stages.

    Use as a context manager (activates both runners and checks they fit together), then
    :meth:`run`. ``artifacts(item, postprocess_config)`` is called in a worker thread for every
    segmented image (``item.mask`` is the cleaned S x S mask; to write masks/overlays); an
    exception it raises turns the row into an error.
    """

    def __init__(self, seg: Runner, cls: Runner, config: PipelineConfig = PipelineConfig()):
        self.seg = seg
        self.cls = cls
        self.config = config
        self.times = StageTimes()
        self.wall_s = 0.0
        self._post: PostprocessConfig | None = None
        self.gate = None

    def __enter__(self) -> "Pipeline":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        try:
            self.seg.activate()
            self.cls.activate()
            check_models(self.seg, self.cls)
            probe_classifier(self.cls)
            if self.config.streams > 1:
                for r in (self.seg, self.cls):
                    if not r.concurrent:
                        raise BadInputError(f"{r.name}: the {r.backend} runner cannot take model calls from several "
                                            f"threads at once; use streams=1 (--streams 1)")
        except BaseException:
            self.deactivate()
            raise
        self._post = postprocess_config(self.seg.card)
        from manet_edge.gate import Gate

        try:
            self.gate = Gate(self.cls, heatmaps=self.config.heatmaps, checks_on=self.config.checks)
        except BaseException:
            self.deactivate()
            raise

    def deactivate(self) -> None:
        self.seg.deactivate()
        self.cls.deactivate()

    @property
    def postprocess(self) -> PostprocessConfig:
        if self._post is None:
            raise ManetEdgeError("Pipeline: call activate() (or use `with pipeline:`) first")
        return self._post

    # -- CPU stages (run in worker threads) ---------------------------------------------------
    def _decode(self, item: WorkItem) -> WorkItem:
        t0 = time.perf_counter()
        try:
            if item.src.error:
                raise BadInputError(item.src.error, item.src.path)
            image = load_image(item.src.path)
            lo, hi = float(image.min()), float(image.max())
            if hi - lo <= 1e-6 * max(1.0, abs(hi)):
                what = f"every pixel is {hi:g}" if hi == lo else f"no contrast: every pixel is within {lo:g} to {hi:g}"
                raise BadInputError(f"image is blank ({what})", item.src.path)
            item.orig_shape = (int(image.shape[0]), int(image.shape[1]))
            item.flags.extend(self.gate.input_flags(item.src.path))
            item.seg_in = stages.seg_feed(image, self.seg.card)
            item.cls_image = stages.cls_image(image, self.cls.card)
            if self.config.keep_display:
                item.display = _display_copy(image)
        except Exception as exc:  # one bad file must not stop the run: it becomes an error row
            item.error = _message(exc)
        self.times.add("decode", time.perf_counter() - t0)
        return item

    def _seg_post(self, item: WorkItem) -> WorkItem:
        t0 = time.perf_counter()
        try:
            lung = stages.clean_lung_mask(item.prob, self.postprocess)
            item.mask = lung.mask
            if not self.config.keep_prob:
                item.prob = None
            item.lung_fraction = lung.lung_fraction
            item.flags = [*item.flags, *lung.flags]
            if not lung.empty:
                item.flags.extend(self.gate.mask_flags(item.cls_image, lung.mask))
            if lung.empty:
                item.error = stages.EMPTY_MASK_ERROR
            else:
                item.cls_feed = stages.cls_feed(item.cls_image, lung.mask, self.cls.card)
            item.cls_image = None
        except Exception as exc:  # see _decode
            item.error = _message(exc)
        self.times.add("seg_post", time.perf_counter() - t0)
        return item

    def _finalize(self, item: WorkItem, artifacts: Artifacts | None) -> WorkItem:
        t0 = time.perf_counter()
        if self.gate is not None and item.logits is not None and not item.error:
            try:
                self.gate.finish(item)
            except Exception as exc:  # see _decode
                item.error = f"input-domain gate failed: {_message(exc)}"
        item.cls_feed = None
        if artifacts is not None and item.mask is not None:
            try:
                artifacts(item, self.postprocess)
            except Exception as exc:  # a failed mask/overlay write fails that row, not the run
                item.error = (item.error + "; " if item.error else "") + f"cannot write outputs: {_message(exc)}"
        item.prob = item.mask = item.display = item.heat = item.logits = item.features = None
        self.times.add("finalize", time.perf_counter() - t0)
        return item

    # -- model stages (run in the calling thread) ---------------------------------------------
    def _run_seg(self, batch: list[WorkItem]) -> None:
        t0 = time.perf_counter()
        try:
            logits = self.seg.infer({"image": np.stack([it.seg_in for it in batch])})["logits"]
        except Exception as exc:  # a failed batch fails its rows
            for it in batch:
                it.error = f"segmenter inference failed: {_message(exc)}"
        else:
            for it, lg in zip(batch, logits):
                if np.isfinite(lg).all():
                    it.prob = stages.lung_probability(lg)
                else:
                    it.error = "segmenter returned NaN or infinite logits"
        for it in batch:
            it.seg_in = None
        self.times.add("seg_infer", time.perf_counter() - t0, len(batch))

    def _run_cls(self, batch: list[WorkItem]) -> None:
        t0 = time.perf_counter()
        feed = stages.cls_batch([it.cls_feed for it in batch], self.cls.input_shapes)
        try:
            outs = self.cls.infer(feed)
            logits = outs["logits"]
        except Exception as exc:  # a failed batch fails its rows
            for it in batch:
                it.error = f"classifier inference failed: {_message(exc)}"
        else:
            feats = outs.get("features") if self.gate is not None and self.gate.keep_features else None
            for i, (it, p) in enumerate(zip(batch, stages.probabilities(logits, self.cls.card))):
                if np.isfinite(p).all():
                    it.probabilities = p
                    it.logits = np.asarray(logits[i], np.float32)
                    if feats is not None:
                        it.features = np.asarray(feats[i], np.float32)
                else:
                    it.error = "classifier returned NaN or infinite logits"
        self.times.add("cls_infer", time.perf_counter() - t0, len(batch))

    # -- scheduler ----------------------------------------------------------------------------
    def run(self, files: Sequence[InputFile], *, artifacts: Artifacts | None = None,
            on_result: Callable[[ImageResult], None] | None = None,
            stop: threading.Event | None = None) -> list[ImageResult]:
        """Run every file; returns one :class:`ImageResult` per file, in the order given.

        ``stop`` (set from a signal handler, say) ends the run early: no new file is started,
        model calls and output writes already under way finish, nothing queued is left
        running, and :class:`~manet_edge.errors.RunInterrupted` is raised with the rows done.
        Both schedules end only when every file has its row (a file is never dropped).
        """
        if self._post is None:
            raise ManetEdgeError("Pipeline: call activate() (or use `with pipeline:`) before run()")
        stop = stop if stop is not None else threading.Event()
        results: dict[int, ImageResult] = {}
        t_start = time.perf_counter()
        try:
            if self.config.streams > 1:
                self._run_streams(files, artifacts, on_result, stop, results)
            else:
                self._run_staged(files, artifacts, on_result, stop, results)
        finally:
            self.wall_s = time.perf_counter() - t_start
        if len(results) < len(files):
            if stop.is_set():
                raise RunInterrupted(results, getattr(stop, "reason", "interrupt"), getattr(stop, "signum", None))
            lost = [files[i].rel for i in range(len(files)) if i not in results]
            raise ManetEdgeError(f"internal error: the scheduler finished without a row for {len(lost)} file(s) "
                                 f"(first: {lost[0]}); please report this")
        return [results[i] for i in range(len(files))]

    def _run_staged(self, files: Sequence[InputFile], artifacts: Artifacts | None,
                    on_result: Callable[[ImageResult], None] | None, stop: threading.Event,
                    results: dict[int, ImageResult]) -> None:
        """One model stream: models in the calling thread, CPU stages in a worker pool.

        The loop ends only when nothing is left anywhere (queued, decoding, waiting for a model,
        post-processing, finishing), or when ``stop`` is set.
        """
        bsz, nw = self.config.batch, self.config.n_workers
        window = 2 * bsz + nw
        todo = deque(WorkItem(i, f) for i, f in enumerate(files))
        decoding: deque[Future] = deque()
        posting: deque[Future] = deque()
        finishing: set[Future] = set()
        seg_ready: list[WorkItem] = []
        cls_ready: list[WorkItem] = []

        def done(item: WorkItem) -> None:
            res = item.result()
            results[item.index] = res
            if on_result is not None:
                on_result(res)

        pool = ThreadPoolExecutor(nw, thread_name_prefix="manet-cpu")
        try:
            while not stop.is_set():
                while todo and len(decoding) + len(seg_ready) < window:
                    decoding.append(pool.submit(self._decode, todo.popleft()))
                while decoding and decoding[0].done():
                    it = decoding.popleft().result()
                    if it.error:
                        done(it)
                    else:
                        seg_ready.append(it)
                while posting and posting[0].done():
                    it = posting.popleft().result()
                    if it.cls_feed is not None:
                        cls_ready.append(it)
                    else:
                        finishing.add(pool.submit(self._finalize, it, artifacts))
                for fut in [f for f in finishing if f.done()]:
                    finishing.discard(fut)
                    done(fut.result())
                seg_flush = not todo and not decoding
                cls_flush = seg_flush and not seg_ready and not posting
                if len(cls_ready) >= bsz or (cls_ready and cls_flush):
                    batch, cls_ready = cls_ready[:bsz], cls_ready[bsz:]
                    self._run_cls(batch)
                    finishing.update(pool.submit(self._finalize, it, artifacts) for it in batch)
                elif len(seg_ready) >= bsz or (seg_ready and seg_flush):
                    batch, seg_ready = seg_ready[:bsz], seg_ready[bsz:]
                    self._run_seg(batch)
                    for it in batch:
                        if it.error:
                            finishing.add(pool.submit(self._finalize, it, artifacts))
                        else:
                            posting.append(pool.submit(self._seg_post, it))
                elif decoding or posting or finishing:
                    heads = [q[0] for q in (decoding, posting) if q] + list(finishing)
                    wait(heads, timeout=0.1, return_when=FIRST_COMPLETED)  # timed: a stop is seen soon
                elif not todo:
                    break  # everything is done (the refill above runs again while files are queued)
        finally:
            # Queued CPU work is cancelled; a mask/overlay write under way finishes (it is atomic).
            pool.shutdown(wait=True, cancel_futures=True)
            for fut in finishing:  # finished meanwhile: keep its row
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    it = fut.result()
                    results.setdefault(it.index, it.result())

    def _process_batch(self, items: list[WorkItem], artifacts: Artifacts | None) -> None:
        """Every stage for one batch, in the calling thread (one model stream)."""
        for it in items:
            self._decode(it)
        segment = [it for it in items if not it.error]
        if segment:
            self._run_seg(segment)
        for it in segment:
            if not it.error:
                self._seg_post(it)
        classify = [it for it in segment if not it.error and it.cls_feed is not None]
        if classify:
            self._run_cls(classify)
        for it in items:
            self._finalize(it, artifacts)

    def _run_streams(self, files: Sequence[InputFile], artifacts: Artifacts | None,
                     on_result: Callable[[ImageResult], None] | None, stop: threading.Event,
                     results: dict[int, ImageResult]) -> None:
        """``streams`` threads, each taking the next batch of files through every stage.

        Results are reported (``on_result``, under a lock) as batches finish, so not strictly in
        input order. ``stop`` ends every stream after its current batch. The calling thread
        waits on per-stream events, not ``Thread.join`` with a timeout (a Ctrl-C interrupting
        that join marks a running thread as stopped, and the process could then exit with
        threads still inside the backend library). A ``KeyboardInterrupt`` reaching this thread
        sets ``stop``, waits for every stream to finish its batch and is re-raised; an
        unexpected exception in a stream stops the others and is re-raised here.
        """
        n, bsz = len(files), self.config.batch
        lock = threading.Lock()
        failures: list[BaseException] = []
        cursor = [0]

        def stream(finished: threading.Event) -> None:
            try:
                while not stop.is_set():
                    with lock:
                        start = cursor[0]
                        cursor[0] += bsz
                    if start >= n:
                        return
                    items = [WorkItem(i, files[i]) for i in range(start, min(n, start + bsz))]
                    self._process_batch(items, artifacts)
                    with lock:
                        for it in items:
                            res = it.result()
                            results[it.index] = res
                            if on_result is not None:
                                on_result(res)
            except BaseException as exc:  # re-raised in the calling thread
                failures.append(exc)
                stop.set()
            finally:
                finished.set()

        count = max(1, min(self.config.streams, -(-n // bsz)))
        events = [threading.Event() for _ in range(count)]
        threads = [threading.Thread(target=stream, args=(ev,), name=f"manet-stream-{k}", daemon=True)
                   for k, ev in enumerate(events)]
        started: list[threading.Event] = []
        interrupted: BaseException | None = None
        try:
            for t, ev in zip(threads, events):
                t.start()
                started.append(ev)
        except KeyboardInterrupt as exc:
            interrupted = exc
            stop.set()
        while True:  # wait for every started stream, whatever arrives meanwhile
            try:
                for ev in started:
                    while not ev.wait(0.1):
                        pass
                break
            except KeyboardInterrupt as exc:
                interrupted = interrupted or exc
                stop.set()
        if interrupted is not None:
            raise interrupted
        if failures:
            raise failures[0]

