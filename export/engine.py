"""Build a TensorRT engine from an exported ONNX file, with a manifest and a precision check.

One ``precision`` switch (fp32|fp16|int8) maps onto what the installed TensorRT offers, decided by
the pure function :func:`plan_build`:

* TensorRT 10.x: weak typing with builder flags (``BuilderFlag.FP16``; ``INT8`` + ``FP16`` for a
  Q/DQ ONNX), or a strongly typed network when the ONNX already is fp16.
* TensorRT 11.x: every network is strongly typed and the precision flags and implicit INT8
  calibration are gone, so fp16 needs the ``*.fp16.onnx`` and int8 the Q/DQ ``*.int8.onnx``
  produced by ``manet-edge export``; an fp32 ONNX with ``--precision fp16`` is an error that says so.

:func:`build_engine` then parses the ONNX, sets a narrow batch profile (min=opt=max unless a
range is given; H and W are fixed), a workspace limit, the timing cache (loaded and saved), DLA
if asked, ``ProfilingVerbosity.DETAILED``, a progress monitor and a logger, builds, reads back the
layer precisions through the engine inspector and refuses to write an engine that is not in the
requested precision. The engine is written atomically with its manifest beside it.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from manet_edge import __version__
from manet_edge.errors import ManetEdgeError, OutputExistsError
from manet_edge.export.engine_checks import (
    OnnxFacts,
    PrecisionReport,
    check_layer_precisions,
    inspect_onnx,
    plugin_layers,
)
from manet_edge.fileutil import atomic_write_bytes
from manet_edge.runtime.engine_manifest import (
    BatchProfile,
    BuildEnv,
    EngineManifest,
    check_compatible,
    errors_only,
    manifest_path,
    probe_environment,
    read_manifest,
    sha256_file,
    write_manifest,
)

Echo = Callable[[str], None]


class EngineBuildError(ManetEdgeError):
    """The engine cannot be built as asked; the message says why and what to do."""


class Precision(str, enum.Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@dataclass(frozen=True)
class BuildPlan:
    """How a precision request maps onto one TensorRT version's API."""

    trt_version: str
    precision: str
    strongly_typed: bool
    network_flags: tuple[str, ...] = ()  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...] = ()  # BuilderFlag members to set
    clear_flags: tuple[str, ...] = ()  # BuilderFlag members to clear (if the version has them)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"typing": "strong" if self.strongly_typed else "weak", "network_flags": list(self.network_flags),
                "builder_flags": list(self.builder_flags), "cleared_flags": list(self.clear_flags),
                "notes": list(self.notes)}


def parse_trt_version(version: str) -> tuple[int, int, int]:
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(version))
    if not m:
        raise EngineBuildError(f"cannot parse TensorRT version {version!r}")
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def plan_build(trt_version: str, precision: str, onnx_is_fp16: bool, onnx_has_qdq: bool, *,
               dla: bool = False) -> BuildPlan:
    """Decide typing mode and flags for ``precision`` on TensorRT ``trt_version`` (pure)."""
    try:
        prec = Precision(precision)
    except ValueError:
        raise EngineBuildError(f"unknown precision {precision!r}; choose one of fp32, fp16, int8") from None
    major, minor, patch = parse_trt_version(trt_version)
    if major < 10:
        raise EngineBuildError(f"TensorRT {trt_version} is too old: manet-edge builds with TensorRT 10.x or 11.x "
                               "(JetPack 6 ships 10.3)")
    if onnx_has_qdq and prec is not Precision.int8:
        raise EngineBuildError("this ONNX contains QuantizeLinear/DequantizeLinear nodes (an int8 export); "
                               "build it with --precision int8, or use the fp32/fp16 ONNX")
    if onnx_is_fp16 and prec is Precision.fp32:
        raise EngineBuildError("this ONNX is already fp16 (*.fp16.onnx); build it with --precision fp16, "
                               "or use the fp32 ONNX for an fp32 engine")
    if dla and prec is Precision.fp32:
        raise EngineBuildError("DLA runs FP16 and INT8 only: use --precision fp16 or int8 with --dla-core")
    if dla and major == 11 and (minor, patch) < (4, 1):
        raise EngineBuildError(f"TensorRT {trt_version} has no DLA support (11.0-11.4.0 do not run on Jetson): "
                               "use TensorRT 10.x (JetPack 6: 10.3) or 11.4.1+ with JetPack 7.2.2+ on AGX Orin")
    notes: list[str] = []
    clear = ("TF32",) if prec is Precision.fp32 else ()
    fallback = ("GPU_FALLBACK",) if dla else ()
    if major >= 11:
        if major > 11:
            notes.append(f"TensorRT {trt_version} is newer than the 11.x this was written for; treated as 11.x")
        if prec is Precision.fp16 and not onnx_is_fp16:
            raise EngineBuildError(
                f"TensorRT {trt_version} removed the FP16 builder flag: every network is strongly typed, so the "
                "fp16 must already be in the ONNX. Export it with `manet-edge export --precision fp16` "
                "(gives *.fp16.onnx) or convert with NVIDIA ModelOpt AutoCast, then build that file.")
        if prec is Precision.int8 and not onnx_has_qdq:
            raise EngineBuildError(
                f"TensorRT {trt_version} removed the INT8 builder flag and implicit calibration: int8 needs "
                "Q/DQ nodes in the ONNX. Export it with `manet-edge export --precision int8` (gives "
                "*.int8.onnx) or quantize with NVIDIA ModelOpt, then build that file.")
        notes.append("strongly typed network: layer precisions come from the ONNX types")
        return BuildPlan(trt_version, prec.value, True, ("STRONGLY_TYPED",), fallback, clear, tuple(notes))
    # TensorRT 10.x
    if prec is Precision.fp32:
        return BuildPlan(trt_version, prec.value, False, (), fallback, clear,
                         ("TF32 disabled so fp32 engines match ONNX Runtime to 1e-3",))
    if prec is Precision.fp16:
        if onnx_is_fp16:
            return BuildPlan(trt_version, prec.value, True, ("STRONGLY_TYPED",), fallback, (),
                             ("fp16 ONNX: strongly typed network (no precision flags allowed)",))
        return BuildPlan(trt_version, prec.value, False, (), ("FP16", *fallback), (),
                         ("weak typing: FP16 flag lets TensorRT pick half-precision kernels",))
    if not onnx_has_qdq:
        raise EngineBuildError(
            "int8 needs a Q/DQ ONNX (explicit quantization): implicit INT8 calibration is deprecated in "
            "TensorRT 10 and removed in 11. Export it with `manet-edge export --precision int8` (gives "
            "*.int8.onnx) and build that file.")
    return BuildPlan(trt_version, prec.value, False, (), ("INT8", "FP16", *fallback), (),
                     ("explicit quantization from Q/DQ nodes; FP16 allowed for layers outside Q/DQ",))


def make_profile(batch: int | None = None, min_batch: int | None = None, opt_batch: int | None = None,
                 max_batch: int | None = None) -> BatchProfile:
    """The batch profile: narrow (min=opt=max=``batch``, default 1) unless a range is given."""
    ranged = [v is not None for v in (min_batch, opt_batch, max_batch)]
    if batch is not None and any(ranged):
        raise EngineBuildError("give either --batch N or --min-batch/--opt-batch/--max-batch, not both")
    try:
        if any(ranged):
            lo = min_batch if min_batch is not None else 1
            hi = max_batch if max_batch is not None else max(lo, opt_batch or lo)
            opt = opt_batch if opt_batch is not None else hi
            return BatchProfile(lo, opt, hi)
        n = 1 if batch is None else batch
        return BatchProfile(n, n, n)
    except ValueError as exc:
        raise EngineBuildError(str(exc)) from None


def profile_shapes(inputs: dict[str, list[Any]], profile: BatchProfile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape per network input. Only the batch axis may be dynamic."""
    shapes = {}
    for name, dims in inputs.items():
        dims = list(dims)
        if not dims:
            raise EngineBuildError(f"input '{name}' is a scalar; MANet inputs are (N, C, H, W)")
        rest = dims[1:]
        if any(not isinstance(d, int) or d < 1 for d in rest):
            raise EngineBuildError(f"input '{name}' has dynamic non-batch dims {dims}; MANet runs at a fixed "
                                   "H x W, re-export the ONNX with fixed spatial dims")
        first = dims[0]
        if isinstance(first, int) and first > 0 and not (profile.min == profile.opt == profile.max == first):
            raise EngineBuildError(f"input '{name}' has a fixed batch of {first} in the ONNX; build with "
                                   f"--batch {first} or re-export with a dynamic batch")
        shapes[name] = profile.shapes(tuple(rest))
    return shapes


def default_engine_path(onnx_path: str | Path, precision: str) -> Path:
    """``classifier.onnx`` -> ``classifier.fp16.engine``; ``classifier.fp16.onnx`` -> ``classifier.fp16.engine``."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    if stem.endswith("." + precision):
        stem = stem[: -len(precision) - 1]
    return onnx_path.with_name(f"{stem}.{precision}.engine")


def default_timing_cache(out: Path, env: BuildEnv) -> Path:
    version = env.tensorrt_version.replace(".", "_")
    return out.parent / f"timing-trt{version}-sm{env.compute_capability.replace('.', '')}.cache"


def hash_calibration(path: str | Path | None) -> str | None:
    """sha256 of a calibration file, or of a folder (sorted relative names + file hashes)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode())
        return digest.hexdigest()
    raise EngineBuildError(f"calibration data {path} does not exist")


def card_calibration_sha256(card: dict[str, Any] | None) -> str | None:
    """The calibration hash ``export.quantize`` stored in an int8 model card (``card.extra``).

    The card is the JSON dict of :class:`manet_edge.metadata.ModelCard`; ``extra`` holds exporter
    additions such as ``calibration_sha256``. A top-level key (a card from a newer writer read as
    a plain dict) is accepted too.
    """
    if not card:
        return None
    extra = card.get("extra") or {}
    value = (extra.get("calibration_sha256") if isinstance(extra, dict) else None) or card.get("calibration_sha256")
    return str(value) if value else None


@dataclass(frozen=True)
class BuildResult:
    engine_path: Path
    manifest: EngineManifest
    skipped: bool = False  # an up-to-date engine was already there
    report: PrecisionReport | None = None


def _up_to_date_problems(out: Path, facts: OnnxFacts, precision: str, profile: BatchProfile,
                         env: BuildEnv) -> list[str]:
    try:
        old = read_manifest(out)
    except ManetEdgeError as exc:
        return [str(exc)]
    problems = [str(p) for p in errors_only(check_compatible(old, env, onnx_sha256=facts.sha256))]
    if old.precision != precision:
        problems.append(f"built in {old.precision}, {precision} requested")
    if old.profile != profile:
        problems.append(f"built for batch profile {old.profile}, {profile} requested")
    if sha256_file(out) != old.engine_sha256:
        problems.append("engine file does not match its manifest")
    return problems


def _make_logger(trt: Any, echo: Echo, verbose: bool) -> Any:
    threshold = trt.ILogger.Severity.VERBOSE if verbose else trt.ILogger.Severity.WARNING

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(threshold):
                echo(f"[TensorRT {getattr(severity, 'name', severity)}] {msg}")

    return _Logger()


def _make_progress_monitor(trt: Any, echo: Echo, max_depth: int = 1) -> Any:
    start = time.monotonic()
    lock = threading.Lock()

    class _Progress(trt.IProgressMonitor):
        """Prints phase starts/ends (top levels only) with elapsed time; never cancels."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.depth: dict[str, int] = {}
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with lock:
                depth = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self.depth[phase_name], self.steps[phase_name] = depth, num_steps
                if depth <= max_depth:
                    echo(f"[{time.monotonic() - start:7.1f}s] {'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with lock:
                total = self.steps.get(phase_name, 0)
                if self.depth.get(phase_name, 9) == 0 and total >= 10 and (step + 1) % max(total // 10, 1) == 0:
                    echo(f"[{time.monotonic() - start:7.1f}s]   {phase_name}: {step + 1}/{total}")
            return True

        def phase_finish(self, phase_name: str) -> None:
            with lock:
                depth = self.depth.pop(phase_name, 0)
                if depth <= max_depth:
                    echo(f"[{time.monotonic() - start:7.1f}s] {'  ' * depth}done: {phase_name}")

    return _Progress()


def _flag_bits(enum_cls: Any, names: tuple[str, ...], trt_major: int) -> int:
    bits = 0
    for name in names:
        member = getattr(enum_cls, name, None)
        if member is None:
            if name == "STRONGLY_TYPED" and trt_major >= 11:
                continue  # strong typing is unconditional in 11.x; the flag may be gone
            raise EngineBuildError(f"this TensorRT has no NetworkDefinitionCreationFlag.{name}")
        bits |= 1 << int(member)
    return bits


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_engine(onnx_path: str | Path, out: str | Path | None = None, *, precision: str = "fp32",
                 profile: BatchProfile | None = None, workspace_mb: int = 1024,
                 timing_cache: str | Path | None = None, dla_core: int | None = None,
                 calibration_data: str | Path | None = None, rebuild: bool = False, min_fraction: float = 0.5,
                 verbose: bool = False, echo: Echo = _stderr, env: BuildEnv | None = None) -> BuildResult:
    """Build ``onnx_path`` into a serialized engine at ``out`` (+ manifest). Needs TensorRT and a GPU."""
    from manet_edge.runtime.tensorrt import import_tensorrt

    onnx_path = Path(onnx_path)
    out = Path(out) if out is not None else default_engine_path(onnx_path, precision)
    profile = profile or make_profile()
    if workspace_mb < 1:
        raise EngineBuildError(f"--workspace-mb must be >= 1, got {workspace_mb}")
    trt = import_tensorrt()
    facts = inspect_onnx(onnx_path)
    plan = plan_build(str(trt.__version__), precision, facts.is_fp16, facts.has_qdq, dla=dla_core is not None)
    for problem in facts.name_problems:
        echo(f"warning: {problem}")
    calibration_sha = hash_calibration(calibration_data) or card_calibration_sha256(facts.card)
    env = env or probe_environment()
    if out.exists() and not rebuild:
        stale = _up_to_date_problems(out, facts, precision, profile, env)
        if not stale:
            echo(f"{out} is up to date (same ONNX, precision, profile, TensorRT and GPU); pass --rebuild to force")
            return BuildResult(out, read_manifest(out), skipped=True)
        raise OutputExistsError(f"{out} exists and differs from this build:\n  - " + "\n  - ".join(stale)
                                + "\npass --rebuild to replace it")

    t0 = time.monotonic()
    logger = _make_logger(trt, echo, verbose)
    builder = trt.Builder(logger)
    network, _parser = network_from_onnx(trt, builder, logger, onnx_path, plan, echo)
    config, shapes = create_config(trt, builder, network, plan, profile, workspace_mb=workspace_mb,
                                   dla_core=dla_core)
    cache_path = Path(timing_cache) if timing_cache is not None else default_timing_cache(out, env)
    reused = attach_timing_cache(config, cache_path, echo)
    echo(f"building {plan.precision} engine, batch {profile.min}/{profile.opt}/{profile.max}, workspace "
         f"{workspace_mb} MiB, timing cache {'reused' if reused else 'new'}: {cache_path}")
    engine_bytes = engine_bytes_from_network(trt, builder, network, config, onnx_path, echo)
    atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))

    info = _engine_information(trt, logger, engine_bytes, shapes)
    report = check_layer_precisions(info, precision, min_fraction=min_fraction)
    ma_op = facts.ma_op
    if ma_op == "local-function" and plugin_layers(info):
        ma_op = "plugin"  # TensorRT >= 10.7 prefers a registered plugin of the same name
        echo("note: the MA op ran as a plugin layer, not as the inlined local function: "
             + ", ".join(plugin_layers(info)[:3]))
    echo(report.summary())
    if not report.ok:
        raise EngineBuildError(f"refusing to write {out}: {report.summary()}")

    manifest = EngineManifest(
        engine_file=out.name, engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        onnx_file=_relative_to(onnx_path, out.parent), onnx_sha256=facts.sha256, precision=plan.precision,
        profile=profile, input_shapes={k: [int(d) for d in v[1][1:]] for k, v in shapes.items()}, env=env,
        ma_op=ma_op,
        calibration_sha256=calibration_sha,
        build={**plan.to_dict(), "workspace_mb": workspace_mb, "timing_cache": str(cache_path),
               "timing_cache_reused": reused, "dla_core": dla_core, "min_fraction": min_fraction},
        layer_precisions=report.counts, card=facts.card,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - t0, 1), manet_edge_version=__version__,
    )
    save_engine(out, engine_bytes, manifest)
    echo(f"wrote {out} and {manifest_path(out).name} in {manifest.build_seconds:.1f}s")
    return BuildResult(out, manifest, skipped=False, report=report)


# -- the build steps (network, config, build, write), each usable on its own ---------------------

def network_from_onnx(trt: Any, builder: Any, logger: Any, onnx_path: str | Path, plan: BuildPlan,
                      echo: Echo = _stderr) -> tuple[Any, Any]:
    """``(network, parser)``: the TensorRT network definition parsed from ``onnx_path`` with the
    plan's network flags (the parser must live as long as the network)."""
    trt_major = parse_trt_version(str(trt.__version__))[0]
    network = builder.create_network(_flag_bits(trt.NetworkDefinitionCreationFlag, plan.network_flags, trt_major))
    parser = trt.OnnxParser(network, logger)
    echo(f"parsing {onnx_path} (TensorRT {trt.__version__}, {plan.to_dict()['typing']} typing)")
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors or ["(no detail)"]))
    return network, parser


def create_config(trt: Any, builder: Any, network: Any, plan: BuildPlan, profile: BatchProfile, *,
                  workspace_mb: int = 1024, dla_core: int | None = None) -> tuple[Any, dict[str, Any]]:
    """``(builder config, profile shapes)``: the plan's builder flags, detailed profiling, the
    workspace limit, one optimization profile over the batch axis and (optionally) a DLA core."""
    config = builder.create_builder_config()
    for name in plan.builder_flags:
        if not hasattr(trt.BuilderFlag, name):
            raise EngineBuildError(f"TensorRT {trt.__version__} has no BuilderFlag.{name}")
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)

    net_inputs = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        net_inputs[tensor.name] = [int(d) if int(d) >= 0 else "?" for d in tensor.shape]
    shapes = profile_shapes(net_inputs, profile)
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)

    if dla_core is not None:
        if dla_core < 0 or dla_core >= int(getattr(builder, "num_DLA_cores", 0)):
            raise EngineBuildError(f"--dla-core {dla_core}: this device has {getattr(builder, 'num_DLA_cores', 0)} "
                                   "DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
    return config, shapes


def attach_timing_cache(config: Any, cache_path: Path, echo: Echo = _stderr) -> bool:
    """Give ``config`` the timing cache at ``cache_path`` (a fresh one when it is missing or from
    another TensorRT/GPU); True when the saved cache was reused."""
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    reused = bool(cache_bytes) and bool(config.set_timing_cache(cache, False))
    if cache_bytes and not reused:
        echo(f"warning: timing cache {cache_path} is from another TensorRT/GPU; starting a fresh one")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    elif not cache_bytes:
        config.set_timing_cache(cache, False)
    return reused


def engine_bytes_from_network(trt: Any, builder: Any, network: Any, config: Any, onnx_path: str | Path,
                              echo: Echo = _stderr) -> bytes:
    """Build the serialized engine (TensorRT's progress shown through ``echo``)."""
    monitor = _make_progress_monitor(trt, echo)
    config.progress_monitor = monitor  # keep `monitor` referenced until the build returns
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path} (see the TensorRT log above)")
    return bytes(serialized)


def save_engine(out: Path, engine_bytes: bytes, manifest: EngineManifest) -> None:
    """Write the engine, then its manifest, each atomically."""
    atomic_write_bytes(out, engine_bytes)
    write_manifest(out, manifest)


def _engine_information(trt: Any, logger: Any, engine_bytes: bytes, shapes: dict[str, Any]) -> str:
    """Inspector JSON of the built engine, with input shapes set so every layer has concrete types."""
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise EngineBuildError("TensorRT could not deserialize the engine it just built")
    context = engine.create_execution_context()
    for name, (_lo, opt, _hi) in shapes.items():
        context.set_input_shape(name, opt)
    inspector = engine.create_engine_inspector()
    try:
        inspector.execution_context = context  # TensorRT 10/11 name
    except AttributeError:
        inspector.context = context  # TensorRT 8.x name
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def _relative_to(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def rebuild_from_manifest(engine_path: str | Path, **overrides: Any) -> BuildResult:
    """Rebuild an engine from the ONNX and settings its manifest records (``--rebuild``)."""
    old = read_manifest(engine_path)
    onnx = old.onnx_path(engine_path)
    if not onnx.is_file():
        raise EngineBuildError(f"cannot rebuild {engine_path}: its ONNX {onnx} is missing")
    kwargs: dict[str, Any] = {"precision": old.precision, "profile": old.profile,
                              "workspace_mb": old.build.get("workspace_mb", 1024), "dla_core": old.build.get("dla_core"),
                              "rebuild": True}
    kwargs.update(overrides)
    return build_engine(onnx, engine_path, **kwargs)
