"""What mask attention costs at inference: exported resnet50-ma vs plain resnet50, CPU, batch 1.

``python -m manet_edge.benchmarks.ma_overhead [--size 512] [--pairs 21] [--sessions 1] [--threads 1 2]
[--runtimes onnxruntime openvino] [--variants naive fused inline] [--profile-runs 10]
[--out DIR] [--name ma_overhead_cpu]``

Both models are exported the same way (``manet_edge.export.onnx.build_onnx``, random weights with
trained-like BN statistics, so the folded convs have biases as a trained model's do);
the MA model in three forms: ``naive`` (torch's export, no MA rules), ``fused`` (one
``manet_edge::MaskAttentionMul`` node per MA site, a model-local function; OpenVINO converts it
with the runtime's extension; the exporter's default ``auto`` body) and ``inline`` (the same graph
inlined); on request ``fused-expand`` (every site expands its map to C channels, the default
before the ``auto`` body) and ``fused-broadcast`` (the literal ``Mul(X, M)`` body).

Timing: for each runtime and thread count, plain and every MA form are loaded together and run
*round-robin* in one process (serpentine order: forward on even rounds, reversed on odd ones), on
the same inputs (a lung-like blob mask). A pair is plain and one MA form from the same round; the
figure of merit is the median over pairs of ``t_ma / t_plain`` (wall clock). With ``--sessions K``
every model is loaded K times (independent sessions, all in the round-robin) and a round's time
for a model is the mean over its K sessions: two sessions of the *same* model differed by up to
1.1 % here (where their buffers land in memory), a bias one session per model cannot average
out. Every form is timed
in the same rounds, so the forms are also comparable with each other, not only with plain. The
machine this was written for is a shared 2-core VM with other jobs running: a run preempted by
another process is slower on the wall clock without doing more work, so the CPU time of the
process over the same call is recorded too (``time.process_time``, all threads) and its median
pair ratio reported next to the wall-clock one. ``--profile-runs N`` adds where the time goes:
each node's least-disturbed time over N profiled runs (ONNX Runtime's profiler; OpenVINO's
``PERF_COUNT``), summed by op type, with the 1x1 "expand" convolutions of the MA body counted apart.

Writes ``<name>.md`` and ``<name>.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from manet_edge.benchmarks.timing import percentile, serpentine

BAR = 1.03
EXPAND = "Conv (mask expand 1x1)"


@dataclass
class FormRatio:
    """Two MA forms timed in the same rounds: median of ``t_a / t_b`` (wall and CPU)."""

    runtime: str
    threads: int
    a: str
    b: str
    pairs: int
    median_ratio: float
    ratio_p25: float
    ratio_p75: float
    cpu_median_ratio: float


@dataclass
class PairResult:
    runtime: str
    variant: str
    pairs: int
    plain_median_ms: float
    plain_p90_ms: float
    ma_median_ms: float
    ma_p90_ms: float
    median_ratio: float  # wall clock, the bar's figure
    threads: int = 1
    ratio_p25: float = 0.0
    ratio_p75: float = 0.0
    plain_cpu_median_ms: float = 0.0
    ma_cpu_median_ms: float = 0.0
    cpu_median_ratio: float = 0.0

    @property
    def meets_bar(self) -> bool:
        return self.median_ratio <= BAR

    @property
    def cpu_meets_bar(self) -> bool:
        return self.cpu_median_ratio <= BAR


def cpu_name() -> str:
    """The CPU model (:func:`manet_edge.cpu.cpu_model`, the one CPU-name reader)."""
    from manet_edge.cpu import cpu_model

    return cpu_model()


def build_models(size: int, variants: list[str]) -> dict[str, Any]:
    """plain resnet50 and the requested resnet50-ma forms as in-memory ONNX models."""
    import torch

    from manet_edge.export.onnx import ExportOptions, build_onnx, make_card, set_card, source_from_name, torch_to_onnx
    from manet_edge.rewrite.functions import inline_ma

    from manet_edge.export.verify import randomize_like_trained

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    # Trained-like BN statistics: fresh BNs fold into zero conv biases, which a trained model lacks.
    plain_src = source_from_name("cls", "resnet50", size=size)
    randomize_like_trained(plain_src.model, size=64)
    models: dict[str, Any] = {"plain": build_onnx(plain_src)[0]}
    src = source_from_name("cls", "resnet50-ma", size=size)
    randomize_like_trained(src.model, size=64)
    if "naive" in variants:
        naive = torch_to_onnx(src)
        set_card(naive, make_card(src, precision="fp32", ma_op="inline", opset=18))
        models["naive"] = naive
    if "fused" in variants or "inline" in variants:
        fused, _ = build_onnx(src, ExportOptions(ma_op="fused"))
        models["fused"] = fused
        models["inline"] = inline_ma(fused)
    if "fused-expand" in variants:
        models["fused-expand"] = build_onnx(src, ExportOptions(ma_op="fused", ma_body="expand"))[0]
    if "fused-broadcast" in variants:
        models["fused-broadcast"] = build_onnx(src, ExportOptions(ma_op="fused", ma_body="broadcast"))[0]
    return {k: v for k, v in models.items() if k == "plain" or k in variants}


def _feed(size: int) -> dict[str, np.ndarray]:
    from manet_edge.export.verify import blob_masks

    rng = np.random.default_rng(0)
    mask = blob_masks(1, size, seed=0)
    image = np.where(mask > 0, rng.uniform(-1, 1, (1, 1, size, size)), -1.0).astype(np.float32)
    return {"image": image, "mask": mask}


# ----------------------------------------------------------------------------------------------
# Runners: a callable feed -> outputs per (runtime, model)
# ----------------------------------------------------------------------------------------------

def _ort_session(model, threads: int, profile_prefix: str | None = None):
    from manet_edge.runtime.onnxrt import session_from_onnx

    return session_from_onnx(model, threads=threads, profile_prefix=profile_prefix)


def _ort_runner(model, threads: int) -> Callable[[dict], Any]:
    sess = _ort_session(model, threads)
    return lambda feed: sess.run(["logits"], feed)


def _ov_compile(model, threads: int, perf_count: bool = False):
    from manet_edge.runtime.openvino import compile_config, compile_model

    compiled = compile_model(model, compile_config("fp32", threads=threads, perf_count=perf_count))
    names = {p.get_any_name() for p in compiled.inputs}  # OpenVINO may drop an unused input
    return compiled, names


def _ov_runner(model, threads: int) -> Callable[[dict], Any]:
    compiled, names = _ov_compile(model, threads)
    request = compiled.create_infer_request()
    return lambda feed: request.infer({k: v for k, v in feed.items() if k in names})


RUNNERS = {"onnxruntime": _ort_runner, "openvino": _ov_runner}


# ----------------------------------------------------------------------------------------------
# Interleaved timing
# ----------------------------------------------------------------------------------------------

def interleaved(runs: dict[str, Callable], feed: dict[str, np.ndarray], rounds: int, warmup: int = 3
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Wall and process-CPU seconds per label and round, labels run in serpentine order."""
    labels = list(runs)
    for _ in range(warmup):
        for label in labels:
            runs[label](feed)
    wall = {k: np.zeros(rounds) for k in labels}
    cpu = {k: np.zeros(rounds) for k in labels}
    for i in range(rounds):
        for label in serpentine(labels, i):
            c0, t0 = time.process_time(), time.perf_counter()
            runs[label](feed)
            wall[label][i] = time.perf_counter() - t0
            cpu[label][i] = time.process_time() - c0
    return wall, cpu


def session_means(times: dict[str, np.ndarray], sep: str = "#") -> dict[str, np.ndarray]:
    """``{"model#j": per-round times}`` -> ``{"model": per-round mean over its sessions j}``."""
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for label, t in times.items():
        groups[label.split(sep, 1)[0]].append(t)
    return {k: np.mean(v, axis=0) for k, v in groups.items()}


def measure(models: dict[str, Any], size: int, pairs: int, threads: list[int], runtimes: list[str],
            variants: list[str], sessions: int = 1) -> tuple[list[PairResult], list[FormRatio]]:
    feed = _feed(size)
    results, forms = [], []
    for rt in runtimes:
        for n in threads:
            runs = {f"{k}#{j}": RUNNERS[rt](models[k], n) for j in range(sessions) for k in ["plain", *variants]}
            wall, cpu = (session_means(t) for t in interleaved(runs, feed, pairs))
            for v in variants:
                ratio = wall[v] / wall["plain"]
                r = PairResult(rt, v, pairs, float(np.median(wall["plain"]) * 1e3),
                               percentile(wall["plain"] * 1e3, 90), float(np.median(wall[v]) * 1e3),
                               percentile(wall[v] * 1e3, 90), float(np.median(ratio)), threads=n,
                               ratio_p25=percentile(ratio, 25), ratio_p75=percentile(ratio, 75),
                               plain_cpu_median_ms=float(np.median(cpu["plain"]) * 1e3),
                               ma_cpu_median_ms=float(np.median(cpu[v]) * 1e3),
                               cpu_median_ratio=float(np.median(cpu[v] / cpu["plain"])))
                results.append(r)
                print(f"{rt:12s} {n}t {v:15s} plain {r.plain_median_ms:7.1f} ms  ma {r.ma_median_ms:7.1f} ms  "
                      f"ratio {r.median_ratio:.4f} (cpu {r.cpu_median_ratio:.4f})", file=sys.stderr)
            if "fused" in variants and "inline" in variants:
                ratio = wall["fused"] / wall["inline"]
                forms.append(FormRatio(rt, n, "fused", "inline", pairs, float(np.median(ratio)),
                                       percentile(ratio, 25), percentile(ratio, 75),
                                       float(np.median(cpu["fused"] / cpu["inline"]))))
            del runs
    return results, forms


# ----------------------------------------------------------------------------------------------
# Where the time goes (profilers)
# ----------------------------------------------------------------------------------------------

def _by_category(per_node: dict[str, list[float]], category: dict[str, str]) -> dict[str, float]:
    """Sum over nodes of each node's least-disturbed time (its minimum over the runs, ms), by category.

    A node preempted by another job is slower on the wall clock without doing more work; the
    minimum over runs keeps each node's undisturbed cost, so the sums compare across models.
    """
    out: dict[str, float] = defaultdict(float)
    for node, times in per_node.items():
        out[category[node]] += min(times)
    return dict(out)


class _OrtProfile:
    """ONNX Runtime's profiler: per-node kernel times (ms), the 1x1 expand convs counted apart."""

    def __init__(self, model, prefix: str, threads: int = 1):
        self.sess = _ort_session(model, threads, profile_prefix=prefix)

    def run(self, feed: dict[str, np.ndarray]) -> None:
        self.sess.run(["logits"], feed)

    def collect(self) -> dict[str, float]:
        path = Path(self.sess.end_profiling())
        events = json.loads(path.read_text())
        path.unlink()
        per_node: dict[str, list[float]] = defaultdict(list)
        category: dict[str, str] = {}
        for e in events:
            if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
                continue
            args = e.get("args", {})
            op = args.get("op_name", "?")
            shapes = [next(iter(s.values())) for s in args.get("input_type_shape", []) if s]
            if op == "Conv" and len(shapes) >= 2 and len(shapes[1]) == 4 and shapes[1][1:] == [1, 1, 1] \
                    and shapes[0][1] == 1:
                op = EXPAND
            category[e["name"]] = op
            per_node[e["name"]].append(e["dur"] / 1e3)
        per_node = {k: v[1:] or v for k, v in per_node.items()}  # drop the first (cold) run
        return _by_category(per_node, category)


def _expand_conv_names(model) -> set[str]:
    """Names OpenVINO gives the MA body's 1x1 expand convs (the node name, else its output's)."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    return {n.name or n.output[0] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1
            and inits.get(n.input[1], [0])[1:] == [1, 1, 1] and n.input[0] != "image"}


class _OvProfile:
    """OpenVINO's per-node counters (``PERF_COUNT``): real times (ms) by node type."""

    def __init__(self, model, threads: int = 1):
        compiled, self.names = _ov_compile(model, threads, perf_count=True)
        self.request = compiled.create_infer_request()
        self.expand = _expand_conv_names(model)
        self.per_node: dict[str, list[float]] = defaultdict(list)
        self.category: dict[str, str] = {}
        self.warm = False

    def run(self, feed: dict[str, np.ndarray]) -> None:
        self.request.infer({k: v for k, v in feed.items() if k in self.names})
        if not self.warm:  # drop the first (cold) run
            self.warm = True
            return
        for p in self.request.profiling_info:
            if p.status == p.Status.EXECUTED:
                self.category[p.node_name] = EXPAND if p.node_name in self.expand else p.node_type
                self.per_node[p.node_name].append(p.real_time.total_seconds() * 1e3)

    def collect(self) -> dict[str, float]:
        return _by_category(self.per_node, self.category)


def profile(models: dict[str, Any], size: int, runs: int, runtimes: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """runtime -> model -> op category -> ms (one thread); the models' profiled runs interleaved."""
    import tempfile

    feed = _feed(size)
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rt in runtimes:
            if rt == "onnxruntime":
                profs = {name: _OrtProfile(m, str(Path(tmp) / name)) for name, m in models.items()}
            else:
                profs = {name: _OvProfile(m) for name, m in models.items()}
            for i in range(runs + 1):
                for name in serpentine(list(profs), i):
                    profs[name].run(feed)
            out[rt] = {name: p.collect() for name, p in profs.items()}
            del profs
    return out


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def environment(threads: list[int]) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import openvino
    import torch

    return {"device": cpu_name(), "cpus": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__, "loadavg_start": os.getloadavg(),
            "nice": os.nice(0), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _profile_table(rt: str, prof: dict[str, dict[str, float]]) -> list[str]:
    models = list(prof)
    cats = sorted({c for m in prof.values() for c in m}, key=lambda c: -max(p.get(c, 0.0) for p in prof.values()))
    lines = [f"**{rt}** (1 thread; ms, sum over nodes of each node's minimum over the profiled runs)", "",
             "| op | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(f"{prof[m].get(c, 0.0):.2f}" for m in models) + " |")
    totals = {m: sum(prof[m].values()) for m in models}
    lines.append("| **total** | " + " | ".join(f"**{totals[m]:.1f}**" for m in models) + " |")
    if "plain" in totals and totals["plain"] > 0:
        lines.append("| MA cost vs plain | " + " | ".join(
            f"{totals[m] - totals['plain']:+.1f} ({totals[m] / totals['plain'] - 1:+.1%})" for m in models) + " |")
    return lines + [""]


def markdown(results: list[PairResult], env: dict[str, Any], args: argparse.Namespace,
             prof: dict[str, dict[str, dict[str, float]]] | None = None, forms: list[FormRatio] | None = None) -> str:
    load = tuple(round(x, 2) for x in env["loadavg_start"]), tuple(round(x, 2) for x in env["loadavg_end"])
    lines = [
        f"# MA overhead on CPU: resnet50-ma vs resnet50, {args.size}x{args.size}, batch 1, fp32",
        "",
        f"Command: `{env['command']}`  ",
        f"When: {env['time']}; device: {env['device']} ({env['cpus']} cores, shared with other jobs; this "
        f"process at nice {env['nice']}); load average at start {load[0]}, at end {load[1]}  ",
        f"Versions: torch {env['torch']}, onnx {env['onnx']}, onnxruntime {env['onnxruntime']}, "
        f"openvino {env['openvino']} (INFERENCE_PRECISION_HINT=f32), python {env['python']}",
        "",
        f"Median over {args.pairs} interleaved rounds (plain and every MA form in each round, serpentine "
        f"order; {args.sessions} independent session(s) per model, a round's time is their mean); "
        f"ratio = MA / plain from the same round. Bar: wall-clock median ratio <= {BAR}. The CPU-time "
        "ratio (process CPU seconds over the same calls) is not inflated by preemption from other jobs.",
        "",
        "| runtime | threads | MA graph | plain median ms (p90) | MA median ms (p90) | median ratio [p25, p75] "
        "| CPU-time ratio | <= 3% (wall) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.runtime} | {r.threads} | {r.variant} | {r.plain_median_ms:.1f} ({r.plain_p90_ms:.1f}) | "
                     f"{r.ma_median_ms:.1f} ({r.ma_p90_ms:.1f}) | {r.median_ratio:.4f} [{r.ratio_p25:.3f}, "
                     f"{r.ratio_p75:.3f}] | {r.cpu_median_ratio:.4f} | {'yes' if r.meets_bar else 'no'} |")
    lines += ["", "naive = torch's export, no MA rules; fused = the MA rules' graph, one fused node per MA site "
              "(manet_edge::MaskAttentionMul with the exporter's default `auto` body: the stem's map expanded to "
              "its 64 channels, the bottleneck sites' maps broadcast; OpenVINO: the runtime's conversion "
              "extension, the op's literal definition); inline = "
              "the fused graph with the functions inlined; fused-expand = every site's map expanded to C "
              "channels (the default before `auto`); fused-broadcast = MaskAttentionMul with the literal "
              "`Mul(X, M)` body. Weights random, BN statistics trained-like (`randomize_like_trained`).", ""]
    if forms:
        lines += ["Fused vs inlined MA graph, same rounds (1.0 = same speed):", "",
                  "| runtime | threads | fused / inline median [p25, p75] | CPU-time ratio |", "|---|---|---|---|"]
        lines += [f"| {f.runtime} | {f.threads} | {f.median_ratio:.4f} [{f.ratio_p25:.3f}, {f.ratio_p75:.3f}] | "
                  f"{f.cpu_median_ratio:.4f} |" for f in forms]
        lines.append("")
    if prof:
        lines += ["## Where the time goes", ""]
        for rt, table in prof.items():
            lines += _profile_table(rt, table)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--pairs", type=int, default=21, help="interleaved rounds (>= 10)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="intra-op thread counts to run")
    ap.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"], choices=sorted(RUNNERS))
    ap.add_argument("--variants", nargs="+", default=["naive", "fused", "inline"],
                    choices=["naive", "fused", "inline", "fused-expand", "fused-broadcast"])
    ap.add_argument("--sessions", type=int, default=1,
                    help="independent sessions per model, all interleaved; a round's time is their mean")
    ap.add_argument("--profile-runs", type=int, default=0, help="profiled runs per model (0: no profile)")
    ap.add_argument("--out", type=Path, default=None, help="folder for <name>.md/.json")
    ap.add_argument("--name", default="ma_overhead_cpu", help="file stem of the results")
    args = ap.parse_args(argv)
    if args.pairs < 10:
        ap.error("--pairs must be >= 10")
    if args.sessions < 1:
        ap.error("--sessions must be >= 1")
    if any(n < 1 for n in args.threads):
        ap.error("--threads must be >= 1")
    env = environment(args.threads)
    env["command"] = "python -m manet_edge.benchmarks.ma_overhead " + " ".join(argv if argv is not None else sys.argv[1:])
    models = build_models(args.size, args.variants)
    results, forms = measure(models, args.size, args.pairs, args.threads, args.runtimes, args.variants,
                             args.sessions)
    prof = profile(models, args.size, args.profile_runs, args.runtimes) if args.profile_runs > 0 else None
    env["loadavg_end"] = os.getloadavg()
    text = markdown(results, env, args, prof, forms)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(text)
        data = {"environment": env, "bar": BAR,
                "results": [asdict(r) | {"meets_bar": r.meets_bar, "cpu_meets_bar": r.cpu_meets_bar} for r in results],
                "forms": [asdict(f) for f in forms], "profile_ms": prof}
        (args.out / f"{args.name}.json").write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
