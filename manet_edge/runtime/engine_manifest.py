"""The JSON manifest written beside every TensorRT engine, and the compatibility check.

A serialized TensorRT engine only runs on the TensorRT version and GPU architecture it was built
for, and silently goes stale when its ONNX changes. The manifest records what the build saw
(TensorRT and CUDA versions, GPU name and compute capability, precision, batch profile, hashes of
the ONNX and calibration data, how the MA op was implemented, build time) so that loading on a
different machine fails with a clear message that says how to rebuild.

This module is part of the runtime (the runtime never imports ``manet_edge.export``). Standard
library only at import time; :func:`probe_environment` imports tensorrt and the CUDA backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manet_edge.choices import EXPORT_PRECISIONS as PRECISIONS
from manet_edge.errors import ModelError
from manet_edge.fileutil import atomic_write_text

SCHEMA_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
MA_IMPLEMENTATIONS = ("local-function", "plugin", "plain-ops", "none")


class EngineMismatchError(ModelError):
    """The engine was built for another TensorRT/GPU, or its ONNX changed since the build."""


def manifest_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + MANIFEST_SUFFIX)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildEnv:
    """The software and hardware an engine is built for (or a runner is running on)."""

    tensorrt_version: str
    cuda_runtime_version: str
    cuda_driver_version: str
    gpu_name: str
    compute_capability: str
    platform: str = ""  # "x86_64" / "aarch64"


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile for the batch axis (H and W are fixed for MANet)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
            raise ValueError(f"batch profile values must be integers >= 1, got min/opt/max={values}")
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile needs min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}")

    @property
    def narrow(self) -> bool:
        return self.min == self.opt == self.max

    def shapes(self, dims: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of an input whose non-batch dims are ``dims``."""
        return ((self.min, *dims), (self.opt, *dims), (self.max, *dims))


@dataclass(frozen=True)
class EngineManifest:
    engine_file: str
    engine_sha256: str
    onnx_file: str  # relative to the engine's folder when the ONNX lives there or below
    onnx_sha256: str
    precision: str
    profile: BatchProfile
    input_shapes: dict[str, list[int]]  # non-batch dims per input
    env: BuildEnv
    ma_op: str = "none"
    calibration_sha256: str | None = None
    build: dict[str, Any] = field(default_factory=dict)  # typing mode, flags, workspace, dla, timing cache
    layer_precisions: dict[str, int] = field(default_factory=dict)
    card: dict[str, Any] | None = None
    built_at: str = ""
    build_seconds: float = 0.0
    manet_edge_version: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelError(f"engine manifest: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.ma_op not in MA_IMPLEMENTATIONS:
            raise ModelError(f"engine manifest: ma_op must be one of {MA_IMPLEMENTATIONS}, got {self.ma_op!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> "EngineManifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{source}: engine manifest is not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{source}: engine manifest must be a JSON object")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ModelError(
                f"{source}: engine manifest schema {version} is not supported (this manet-edge reads "
                f"{SCHEMA_VERSION}); rebuild the engine with `manet-edge engine build ... --rebuild`"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        missing = required - set(data)
        if missing:
            raise ModelError(f"{source}: engine manifest lacks {sorted(missing)}")
        kwargs = {k: v for k, v in data.items() if k in names}
        try:
            kwargs["profile"] = BatchProfile(**kwargs["profile"])
            kwargs["env"] = BuildEnv(**kwargs["env"])
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: engine manifest has a malformed profile/env ({exc})") from exc
        kwargs["input_shapes"] = {k: [int(d) for d in v] for k, v in kwargs["input_shapes"].items()}
        return cls(**kwargs)

    def onnx_path(self, engine_path: str | Path) -> Path:
        """Where the ONNX the engine was built from is expected (relative paths: the engine's folder)."""
        p = Path(self.onnx_file)
        return p if p.is_absolute() else Path(engine_path).parent / p

    def rebuild_command(self, engine_path: str | Path) -> str:
        """The `manet-edge engine build` command that rebuilds this engine with the same settings."""
        args = ["manet-edge", "engine", "build", str(self.onnx_path(engine_path)), "--out", str(engine_path),
                "--precision", self.precision]
        if self.profile.narrow:
            args += ["--batch", str(self.profile.opt)]
        else:
            args += ["--min-batch", str(self.profile.min), "--opt-batch", str(self.profile.opt),
                     "--max-batch", str(self.profile.max)]
        dla = self.build.get("dla_core")
        if dla is not None:
            args += ["--dla-core", str(dla)]
        return shlex.join(args + ["--rebuild"])


def write_manifest(engine_path: str | Path, manifest: EngineManifest) -> Path:
    path = manifest_path(engine_path)
    atomic_write_text(path, manifest.to_json())
    return path


def read_manifest(engine_path: str | Path) -> EngineManifest:
    path = manifest_path(engine_path)
    if not path.is_file():
        raise ModelError(
            f"{engine_path}: no engine manifest ({path.name}) beside the engine; engines built outside "
            "manet-edge cannot be checked. Build it with `manet-edge engine build <model.onnx> --out "
            f"{engine_path}`"
        )
    return EngineManifest.from_json(path.read_text(encoding="utf-8"), source=str(path))


@dataclass(frozen=True)
class Problem:
    """One difference between the build and this machine. ``error`` ones stop the runner."""

    what: str
    built: str
    current: str
    severity: str = "error"  # "error" | "warning"
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.what}: engine built with {self.built!r}, this machine has {self.current!r}"
        return f"{text} ({self.hint})" if self.hint else text


def _major_minor_patch(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:3])


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def check_compatible(manifest: EngineManifest, current: BuildEnv, *, onnx_sha256: str | None = None) -> list[Problem]:
    """Everything that makes ``manifest``'s engine unusable (or suspect) on ``current``.

    Rules: the TensorRT version must match to major.minor.patch (serialized engines are not
    portable across TensorRT releases); the GPU compute capability must match (engines hold
    architecture-specific kernels); the CUDA major version must match. A different GPU name with
    the same compute capability is a warning (it runs, tactics were timed elsewhere). When
    ``onnx_sha256`` (the ONNX beside the engine now) is given and differs, the engine is stale.
    """
    problems: list[Problem] = []
    built = manifest.env
    if _major_minor_patch(built.tensorrt_version) != _major_minor_patch(current.tensorrt_version):
        problems.append(Problem("TensorRT version", built.tensorrt_version, current.tensorrt_version,
                                hint="engines only load in the TensorRT release that built them"))
    if built.compute_capability != current.compute_capability:
        problems.append(Problem("GPU compute capability", built.compute_capability, current.compute_capability,
                                hint=f"built on {built.gpu_name}, running on {current.gpu_name}"))
    elif built.gpu_name != current.gpu_name:
        problems.append(Problem("GPU model", built.gpu_name, current.gpu_name, severity="warning",
                                hint="same architecture, so it loads; kernels were timed on the other GPU"))
    if _major(built.cuda_runtime_version) != _major(current.cuda_runtime_version):
        problems.append(Problem("CUDA major version", built.cuda_runtime_version, current.cuda_runtime_version))
    if onnx_sha256 is not None and onnx_sha256 != manifest.onnx_sha256:
        problems.append(Problem("ONNX sha256", manifest.onnx_sha256[:12], onnx_sha256[:12],
                                hint="the ONNX beside the engine changed after the build"))
    return problems


def errors_only(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def mismatch_message(engine_path: str | Path, manifest: EngineManifest, problems: list[Problem]) -> str:
    lines = [f"{engine_path}: this TensorRT engine cannot be used on this machine:"]
    lines += [f"  - {p}" for p in problems]
    onnx = manifest.onnx_path(engine_path)
    if onnx.is_file():
        lines.append(f"Rebuild it from {onnx}:\n  {manifest.rebuild_command(engine_path)}")
    else:
        lines.append(f"Rebuild it with --rebuild from the ONNX it was built from ({manifest.onnx_file}, "
                     "not found beside the engine).")
    return "\n".join(lines)


def probe_environment(device: int = 0, cuda_backend: str = "auto") -> BuildEnv:
    """Describe this machine: imports tensorrt and a CUDA library (raises if either is missing)."""
    import platform

    from manet_edge.runtime.cuda import load_backend
    from manet_edge.runtime.tensorrt import import_tensorrt

    trt = import_tensorrt()
    info = load_backend(cuda_backend, device).device_info(device)
    return BuildEnv(
        tensorrt_version=str(trt.__version__),
        cuda_runtime_version=info.cuda_runtime_version,
        cuda_driver_version=info.cuda_driver_version,
        gpu_name=info.name,
        compute_capability=info.compute_capability,
        platform=platform.machine(),
    )
