"""Latency and throughput of zoo models (plain, -ma, -cbam) on every backend and precision present.

One run (:func:`run`):

1. capture the environment (:mod:`manet_edge.benchmarks.env`), load average at the start;
2. expand ``models x sizes x backends x precisions x batches`` into targets; those that cannot run
   here become *skips* with the reason (a missing library, a CPU without bf16, ...);
3. for each **group** - one architecture (all its requested variants) at one size and batch -
   prepare every target (export to ONNX once per model), then time them **interleaved**
   (:func:`manet_edge.benchmarks.timing.interleave`): ``warmup`` untimed rounds, ``runs`` timed
   rounds, each round one call of every target in serpentine order. Latency stats per target, and
   the two ratios measured in those same rounds: MA (or CBAM) over plain on each backend, and each
   backend over torch eager for each model;
4. on a Jetson with tegrastats/jtop, a separate power phase per target: back-to-back calls for
   ``power_seconds`` while sampling board power -> mean mW and mJ per image;
5. optionally the two-stage pipeline stage by stage (:mod:`manet_edge.benchmarks.pipeline_stages`);
6. the FLOPs/params table (:func:`manet_edge.benchmarks.flops.table`) for the zoo models timed;
7. load average at the end. Returns one JSON-ready document (written by :mod:`.report`).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from manet_edge.benchmarks import env as envmod
from manet_edge.runtime.backends import bench_order
from manet_edge.benchmarks.targets import (
    ExportFn,
    ModelSpec,
    Prepared,
    Skip,
    Target,
    backend_unavailable,
    export_zoo_onnx,
    parse_models,
    model_unavailable,
    precision_unavailable,
    prepare,
)
from manet_edge.benchmarks.timing import check_counts, interleave
from manet_edge.errors import BadInputError

SCHEMA = 1
Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    """Everything one ``manet-edge bench`` run needs (each field is a CLI option)."""

    models: tuple[str, ...] = ("resnet50", "resnet50-ma")
    backends: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "tensorrt")
    precisions: tuple[str, ...] = ()
    """Empty: each backend's default (fp32)."""
    sizes: tuple[int, ...] = (512,)
    batches: tuple[int, ...] = (1,)
    runs: int = 20
    warmup: int = 3
    threads: int | None = None
    device: str = "auto"
    ma_op: str = "auto"
    pipeline: bool = False
    pipeline_models: str | None = None
    pipeline_runs: int = 3
    power_seconds: float = 3.0
    work_dir: str | None = None
    command: str = ""

    def __post_init__(self) -> None:
        check_counts(self.warmup, self.runs)
        if not self.models:
            raise BadInputError("name at least one model (--models)")
        if not self.backends:
            raise BadInputError("name at least one backend (--backends)")
        if any(s < 8 for s in self.sizes):
            raise BadInputError(f"sizes must be >= 8 px, got {list(self.sizes)}")
        if any(b < 1 for b in self.batches):
            raise BadInputError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if self.threads is not None and self.threads < 1:
            raise BadInputError(f"threads must be >= 1, got {self.threads}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BadInputError(f"device must be auto, cpu or cuda, got {self.device!r}")


def plan(config: BenchConfig, notes: list[str]) -> tuple[list[Target], list[Skip]]:
    """Targets to time and skips, in a stable order (backends in the table's ``bench_order``)."""
    from manet_edge.runtime import BACKENDS, normalise_precision

    specs = parse_models(list(config.models), list(config.sizes), notes)
    unknown = [b for b in config.backends if b not in BACKENDS]
    if unknown:
        raise BadInputError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    order = bench_order()
    backends = sorted(dict.fromkeys(config.backends), key=order.index)
    wanted = [normalise_precision(p) for p in config.precisions] if config.precisions else []
    targets: list[Target] = []
    skips: list[Skip] = []
    for backend in backends:
        reason = backend_unavailable(backend)
        if reason:
            skips.append(Skip(backend, reason))
            continue
        precisions = wanted or [BACKENDS[backend].default_precision or "fp32"]
        for precision in precisions:
            generic = precision_unavailable(backend, precision)
            if generic:
                skips.append(Skip(f"{backend} {precision}", generic))
                continue
            for spec, batch in itertools.product(specs, config.batches):
                why = model_unavailable(spec) or precision_unavailable(backend, precision, spec)
                if why:
                    skips.append(Skip(f"{spec.label} {backend} {precision}", why))
                    continue
                targets.append(Target(spec, backend, precision, batch))
    return targets, skips


def groups(targets: list[Target]) -> list[tuple[tuple[str, int, int], list[Target]]]:
    """Targets grouped by (architecture, size, batch), in first-seen order."""
    out: dict[tuple[str, int, int], list[Target]] = {}
    for t in targets:
        out.setdefault((t.model.arch, t.model.size, t.batch), []).append(t)
    return list(out.items())


def _row(p: Prepared, stats, errors: dict[str, str]) -> dict[str, Any]:
    t = p.target
    row: dict[str, Any] = {
        "label": t.label, "model": t.model.name, "arch": t.model.arch, "variant": t.model.variant,
        "kind": t.model.kind, "size": t.model.size, "batch": t.batch, "backend": t.backend,
        "precision_requested": t.precision, "precision": p.precision, "device": p.device,
        "clock": p.clock_name, "info": p.info,
    }
    if stats is not None:
        row["latency_ms"] = stats.as_dict()
        row["throughput_ips"] = round(stats.throughput(t.batch), 3)
    else:
        row["error"] = errors.get(t.label, "no timed run")
    return row


def group_ratios(prepared: list[Prepared], result) -> dict[str, list[dict[str, Any]]]:
    """MA/CBAM-vs-plain per backend+precision, and backend-vs-torch per model, from one group's rounds."""
    by = {(p.target.model, p.target.backend, p.target.precision): p.target.label for p in prepared}
    ma: list[dict[str, Any]] = []
    vs_torch: list[dict[str, Any]] = []
    for (spec, backend, precision), label in by.items():
        if spec.path is None and spec.variant != "plain":
            plain = ModelSpec(spec.arch, spec.size)
            other = by.get((plain, backend, precision))
            r = result.ratio(label, other) if other else None
            if r is not None:
                ma.append({"model": spec.name, "plain": plain.name, "size": spec.size, "batch": prepared[0].target.batch,
                           "backend": backend, "precision": precision, "variant": spec.variant, **r.as_dict()})
        if backend != "torch":
            ref = by.get((spec, "torch", "fp32"))
            r = result.ratio(label, ref) if ref else None
            if r is not None:
                vs_torch.append({"model": spec.name, "size": spec.size, "batch": prepared[0].target.batch,
                                 "backend": backend, "precision": precision, **r.as_dict()})
    return {"ma_vs_plain": ma, "backend_vs_torch": vs_torch}


def power_phase(prepared: list[Prepared], sampler, seconds: float, min_calls: int) -> dict[str, dict[str, Any]]:
    """Per target: back-to-back calls for ``seconds`` (at least ``min_calls``) while sampling power."""
    from manet_edge.benchmarks.jetson import energy_mj_per_image, summarize_power

    out: dict[str, dict[str, Any]] = {}
    for p in prepared:
        calls = 0
        t0 = time.perf_counter()
        while calls < min_calls or time.perf_counter() - t0 < seconds:
            p.step()
            calls += 1
        t1 = time.perf_counter()
        summary = summarize_power(sampler.window(t0, t1))
        if summary is None:
            out[p.target.label] = {"error": f"no {sampler.source} sample in the {t1 - t0:.1f} s window"}
            continue
        images = calls * p.target.batch
        summary.update(source=sampler.source, seconds=round(t1 - t0, 3), images=images,
                       mj_per_image=round(energy_mj_per_image(summary["mean_mw"], t1 - t0, images), 2))
        out[p.target.label] = summary
    return out


def is_capability_error(exc: BaseException) -> bool:
    """A machine that cannot run a target (library, GPU, engine precision) - a skip, not a failure."""
    from manet_edge.errors import BackendUnavailableError

    return isinstance(exc, BackendUnavailableError) or type(exc).__name__ == "EngineBuildError"


def run_group(targets: list[Target], config: BenchConfig, work_dir: Path, log: Log, *,
              export: ExportFn = export_zoo_onnx, sampler=None) -> dict[str, Any]:
    """Prepare, time interleaved, compute ratios (and power) for one group; always releases targets."""
    prepared: list[Prepared] = []
    failed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    try:
        for t in targets:
            try:
                prepared.append(prepare(t, work_dir=work_dir, threads=config.threads, device=config.device,
                                        ma_op=config.ma_op, export=export))
            except Exception as exc:  # one target that cannot be built must not stop the others
                if is_capability_error(exc):
                    skipped.append({"what": t.label, "reason": str(exc)})
                    log(f"  skip {t.label}: {exc}")
                else:
                    failed.append({"what": t.label, "reason": f"{type(exc).__name__}: {exc}"})
                    log(f"  FAILED {t.label}: {type(exc).__name__}: {exc}")
        if not prepared:
            return {"rows": [], "ratios": {"ma_vs_plain": [], "backend_vs_torch": []}, "failed": failed,
                    "skipped": skipped}
        steps = {p.target.label: (p.step, p.clock) for p in prepared}
        t0 = time.perf_counter()
        result = interleave(steps, warmup=config.warmup, runs=config.runs,
                            on_error=lambda label, exc: log(f"  {label} failed: {exc}"))
        log(f"  timed {len(steps)} targets x {config.runs} rounds in {time.perf_counter() - t0:.1f} s")
        rows = [_row(p, result.stats(p.target.label), result.errors) for p in prepared]
        failed.extend({"what": k, "reason": v} for k, v in result.errors.items())
        if sampler is not None:
            alive = [p for p in prepared if p.target.label not in result.errors]
            power = power_phase(alive, sampler, config.power_seconds, config.runs)
            for row in rows:
                if row["label"] in power:
                    row["power"] = power[row["label"]]
        return {"rows": rows, "ratios": group_ratios(prepared, result), "failed": failed, "skipped": skipped}
    finally:
        for p in prepared:
            try:
                p.close()
            except Exception:  # releasing must not hide the results
                pass


def flops_rows(specs: list[ModelSpec], log: Log) -> list[dict[str, Any]]:
    """Params and ops of the zoo models timed, at their sizes, in both conventions."""
    try:
        from manet_edge.benchmarks import flops
    except ImportError as exc:  # torch missing: the table is optional
        log(f"FLOPs table skipped: {exc}")
        return []
    rows: list[dict[str, Any]] = []
    by_size: dict[int, list[str]] = {}
    for s in specs:
        if s.path is None:
            by_size.setdefault(s.size, [])
            if s.name not in by_size[s.size]:
                by_size[s.size].append(s.name)
    for size, names in by_size.items():
        thop = flops.table(names, size)
        true = {r["model"]: r for r in flops.table(names, size, convention="true")}
        for r in thop:
            rows.append({"model": r["model"], "size": size, "params_m": r["params_m"], "thop_ops_m": r["ops_m"],
                         "paper_ops_m": r["paper_ops_m"], "true_gflops": round(true[r["model"]]["ops_m"] / 1e3, 4)})
    return rows


def run(config: BenchConfig, log: Log = print, *, export: ExportFn = export_zoo_onnx) -> dict[str, Any]:
    """The whole benchmark; returns the results document (see the module docstring)."""
    notes: list[str] = []
    env = envmod.capture()
    log(f"{env['machine']}: {env['cpu']['model']}, {env['cpu']['logical_cores']} cores, "
        f"load {env['load_average_start']}")
    for w in (env.get("jetson") or {}).get("warnings", []):
        log(f"warning: {w}")
    targets, skips = plan(config, notes)
    for s in skips:
        log(f"skip {s.what}: {s.reason}")
    for n in notes:
        log(f"note: {n}")
    sampler = None
    power_note = None
    if targets:
        from manet_edge.benchmarks.jetson import power_probe

        probe = power_probe()
        sampler, power_note = probe.sampler, probe.reason
    doc: dict[str, Any] = {
        "schema": SCHEMA, "benchmark": "manet-edge bench", "command": config.command,
        "config": asdict(config), "env": env, "results": [], "ratios": {"ma_vs_plain": [], "backend_vs_torch": []},
        "skipped": [s.as_dict() for s in skips], "failed": [], "notes": notes, "power": power_note or "measured",
    }
    tmp = None
    if config.work_dir:
        work_dir = Path(config.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="manet-bench-")
        work_dir = Path(tmp.name)
    t_start = time.perf_counter()
    try:
        if sampler is not None:
            sampler.start()
        for (arch, size, batch), members in groups(targets):
            log(f"group {arch} @ {size} px, batch {batch}: {len(members)} targets")
            res = run_group(members, config, work_dir, log, export=export, sampler=sampler)
            doc["results"].extend(res["rows"])
            doc["failed"].extend(res["failed"])
            doc["skipped"].extend(res["skipped"])
            for key in ("ma_vs_plain", "backend_vs_torch"):
                doc["ratios"][key].extend(res["ratios"][key])
            for row in res["rows"]:
                if "latency_ms" in row:
                    lat = row["latency_ms"]
                    log(f"  {row['label']:<48} {row['precision']:>5}  median {lat['median_ms']:9.2f} ms  "
                        f"p90 {lat['p90_ms']:9.2f}  {row['throughput_ips']:8.2f} img/s")
        if config.pipeline:
            from manet_edge.benchmarks.pipeline_stages import bench_pipeline

            doc["pipeline"] = bench_pipeline(config, log)
    finally:
        if sampler is not None:
            sampler.stop()
        if tmp is not None:
            tmp.cleanup()
    doc["flops"] = flops_rows(sorted({t.model for t in targets}, key=lambda s: (s.size, s.name)), log)
    doc["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    doc["env"] = envmod.snapshot(env)
    return doc
