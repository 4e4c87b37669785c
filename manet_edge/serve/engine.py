"""The pipeline over encoded image bytes: what one Triton request runs.

:class:`BytesPipeline` holds a :class:`manet_edge.pipeline.Pipeline` (the same runners, decode,
pre-processing, clean-up and calibration as ``manet-edge infer``). Each call takes the encoded
files of a batch of requests (PNG, JPEG, TIFF, BMP or DICOM bytes), writes them to a private
temporary folder (mode 0700, removed afterwards) and runs the pipeline over those files, so a
request is decoded by exactly the code that decodes a file for ``infer`` (:func:`manet_edge.io.
load_image`, DICOM found by its 'DICM' magic) and gets the same probabilities. A request whose
image cannot be used gets its row with ``status=error`` and the reason; the others are unaffected.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MAX_REQUEST_BYTES = 256 * 1024 * 1024
"""A request larger than this is refused before it is written anywhere."""


@dataclass
class Answer:
    """One request's result: the ``predictions.csv`` row (typed) and, if asked, the mask."""

    row: dict[str, Any]
    mask: np.ndarray | None = None
    """uint8 0/255 at the input's resolution (``--save-masks``'s PNG), when requested and segmented."""

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"


class BytesPipeline:
    """Runners + :class:`~manet_edge.pipeline.Pipeline`, activated once, run per batch of requests.

    ``backend``/``precision``/``models``/``threads`` are ``manet-edge infer``'s options. Calls from
    several threads are serialised (one pipeline run at a time; Triton's model instances give
    parallelism).
    """

    def __init__(self, seg, cls, *, batch: int = 1, workers: int = 0, backend: str | None = None):
        from manet_edge.pipeline import Pipeline, PipelineConfig

        self.backend = backend or seg.backend
        self.pipeline = Pipeline(seg, cls, PipelineConfig(batch=batch, workers=workers, keep_prob=True, streams=1))
        self.pipeline.activate()
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="manet-edge-serve-"))

    @classmethod
    def from_options(cls, *, backend: str = "onnxruntime", precision: str | None = None,
                     models: str | Path | None = None, threads: int | None = None, batch: int = 1,
                     workers: int = 0) -> "BytesPipeline":
        """Runners as ``manet-edge infer`` makes them (bundled models unless ``models``)."""
        from manet_edge.assets import model_paths
        from manet_edge.commands.infer import _check_backend_installed, _runner_kwargs
        from manet_edge.runtime import backend_info, create_runner, normalise_precision

        info = backend_info(backend)
        precision = normalise_precision(precision, backend)
        _check_backend_installed(backend, info)
        (seg_path, seg_prec), (cls_path, cls_prec) = model_paths(
            Path(models) if models else None, info.artifact_suffix, precision, with_precision=True)
        kwargs = _runner_kwargs(backend, threads, 1)
        seg = create_runner(seg_path, backend, seg_prec, name="segmenter", **kwargs)
        clf = create_runner(cls_path, backend, cls_prec, name="classifier", **kwargs)
        return cls(seg, clf, batch=batch, workers=workers, backend=backend)

    def close(self) -> None:
        self.pipeline.deactivate()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "BytesPipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        p = self.pipeline
        return {"backend": self.backend, "precision": {"segmenter": p.seg.precision, "classifier": p.cls.precision},
                "segmenter": str(p.seg.path), "classifier": str(p.cls.path)}

    def run(self, blobs: Sequence[bytes], *, names: Sequence[str] | None = None,
            want_mask: Sequence[bool] | bool = False) -> list[Answer]:
        """One :class:`Answer` per blob, in order. ``names`` fill the rows' ``file`` column."""
        from manet_edge.pipeline import InputFile
        from manet_edge.postprocess import upsample_mask
        from manet_edge.results import row_dict

        n = len(blobs)
        names = list(names) if names is not None else [f"request-{i}" for i in range(n)]
        masks_wanted = [want_mask] * n if isinstance(want_mask, bool) else list(want_mask)
        with self._lock:
            work = Path(tempfile.mkdtemp(dir=self._tmp))
            try:
                files, refused = [], {}
                for i, blob in enumerate(blobs):
                    path = work / f"{i:06d}"
                    if len(blob) > MAX_REQUEST_BYTES:
                        refused[i] = f"request is too large ({len(blob)} bytes; the limit is {MAX_REQUEST_BYTES})"
                        blob = b""
                    with open(path, "wb") as fh:
                        fh.write(blob)
                    files.append(InputFile(path, str(i)))
                masks: dict[str, np.ndarray] = {}

                def keep_mask(item, post) -> None:
                    if masks_wanted[int(item.src.rel)]:
                        masks[item.src.rel] = (upsample_mask(item.mask, item.prob, item.orig_shape, post.threshold)
                                               .astype(np.uint8) * 255)

                results = self.pipeline.run(files, artifacts=keep_mask)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        answers = []
        for i, r in enumerate(results):
            row = row_dict(r)
            row["file"] = names[i]
            if i in refused:
                row["error"] = refused[i]
            answers.append(Answer(row, masks.get(str(i))))
        return answers


def env_settings(parameters: dict[str, Any]) -> dict[str, Any]:
    """BytesPipeline keyword arguments from a model's ``config.pbtxt`` parameters (strings)."""
    def get(key: str) -> str:
        value = parameters.get(key, {})
        return value.get("string_value", "") if isinstance(value, dict) else str(value or "")

    out: dict[str, Any] = {"backend": get("backend") or "onnxruntime"}
    if get("precision"):
        out["precision"] = get("precision")
    if get("models"):
        out["models"] = get("models")
    if get("threads"):
        out["threads"] = int(get("threads"))
    if get("batch"):
        out["batch"] = int(get("batch"))
    if get("workers"):
        out["workers"] = int(get("workers"))
    return out


def cpu_threads_default() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
