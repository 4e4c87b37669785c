"""Benchmark reports: the JSON document, a Markdown summary, PNG plots and a comparison with an
earlier results file.

``write_all(doc, out_dir, stem)`` writes ``<stem>.json``, ``<stem>.md``, ``<stem>_latency.png``
(median latency by model and backend, whiskers to p90) and ``<stem>_ma_overhead.png`` (MA/plain
latency ratio per backend with the p10-p90 spread of the per-round ratios, and the FLOPs ratio for
reference). :func:`compare` matches rows of two documents by (model, size, batch, backend,
precision) and reports the change of the medians and of the MA/plain ratios. matplotlib is
imported only to draw (Agg backend, no display needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from manet_edge.errors import BadInputError
from manet_edge.fileutil import atomic_write_bytes, atomic_write_text


def _f(v: Any, spec: str = ".2f") -> str:
    return "" if v is None else format(v, spec)


def _inline(value: Any) -> str:
    """A value for a line of Markdown: ``k=v, ...`` for a mapping, ``a / b / c`` for a list, never a
    Python repr."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return " / ".join(_inline(v) for v in value) or "none"
    return "n/a" if value is None else str(value)


def _table(header: list[str], rows: Iterable[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def load(path: str | Path) -> dict[str, Any]:
    """Read a results JSON written by :func:`write_all`; a clear error if it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read benchmark results ({exc})", path) from exc
    if not isinstance(doc, dict) or "results" not in doc:
        raise BadInputError("not a manet-edge bench results file (no 'results')", path)
    return doc


def _key(row: dict[str, Any]) -> tuple:
    return (row["model"], row["size"], row["batch"], row["backend"], row.get("precision_requested", row.get("precision")))


# -- Markdown --------------------------------------------------------------------------------
def env_lines(env: dict[str, Any]) -> list[str]:
    cpu = env.get("cpu", {})
    libs = env.get("libraries", {})
    lines = [f"- machine: `{env.get('machine')}`; {env.get('platform')}",
             f"- CPU: {cpu.get('model')}, {cpu.get('logical_cores')} logical / {cpu.get('physical_cores')} physical "
             f"cores ({cpu.get('usable_cores')} usable); ISA: {', '.join(cpu.get('isa') or []) or 'n/a'}; "
             f"memory {env.get('memory_gib')} GiB",
             f"- load average (1/5/15 min): start {_inline(env.get('load_average_start'))}, "
             f"end {_inline(env.get('load_average_end'))}",
             f"- time (UTC): {env.get('time_utc')} to {env.get('time_utc_end')}"]
    gpu = env.get("gpu") or {}
    if gpu.get("gpus"):
        g = gpu["gpus"][0]
        lines.append(f"- GPU: {g['name']} (driver {g['driver']}, {g['memory']}); CUDA {gpu.get('cuda')}")
    else:
        lines.append("- GPU: none")
    jet = env.get("jetson")
    if jet:
        mode = (jet.get("nvpmodel") or {}).get("mode")
        lines.append(f"- Jetson: {jet.get('board')}; L4T {jet.get('l4t')}; nvpmodel {mode}; "
                     f"clocks locked: {jet.get('clocks_locked')}")
        lines.extend(f"- **warning**: {w}" for w in jet.get("warnings", []))
    lines.append("- libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()))
    if env.get("threads"):
        lines.append(f"- threads: {_inline(env['threads'])}")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    out = ["# manet-edge bench", ""]
    if doc.get("command"):
        out += ["Produced by:", "", "```", doc["command"], "```", ""]
    cfg = doc.get("config", {})
    out += [f"Warm-up {cfg.get('warmup')} rounds, {cfg.get('runs')} timed rounds; targets of one architecture, "
            "size and batch timed interleaved (one call of each per round, serpentine order). "
            f"Total {doc.get('elapsed_s')} s.", ""]
    out += ["## Environment", "", *env_lines(doc.get("env", {})), ""]

    vs = {(r["model"], r["size"], r["batch"], r["backend"], r["precision"]): r for r in doc["ratios"]["backend_vs_torch"]}
    flops = {(f["model"], f["size"]): f for f in doc.get("flops", [])}
    out += ["## Latency (ms per batch)", ""]
    rows = []
    for r in doc["results"]:
        lat = r.get("latency_ms")
        if lat is None:
            continue
        ratio = vs.get((r["model"], r["size"], r["batch"], r["backend"], r["precision_requested"]))
        power = r.get("power") or {}
        f = flops.get((r["model"], r["size"]))
        gflops = f["true_gflops"] * r["batch"] / (lat["median_ms"] / 1e3) if f and lat["median_ms"] > 0 else None
        rows.append([r["model"], str(r["size"]), str(r["batch"]), r["backend"], r["precision"], r["clock"],
                     _f(lat["median_ms"]), _f(lat["p90_ms"]), _f(lat["p99_ms"]), _f(lat["min_ms"]), _f(lat["max_ms"]),
                     _f(r["throughput_ips"]), _f(gflops, ".1f"), _f(ratio["median"] if ratio else None, ".3f"),
                     _f(power.get("mj_per_image"), ".1f")])
    out += _table(["model", "size", "batch", "backend", "precision", "clock", "median", "p90", "p99", "min", "max",
                   "img/s", "GFLOP/s", "x torch", "mJ/img"], rows, "lrrlll" + "r" * 9)
    out += ["", "`GFLOP/s`: the model's true-convention FLOPs x batch / median latency. `x torch`: median over "
                "rounds of (this backend's time / torch eager's time in the same round).", ""]

    out += ["## Mask-attention overhead (same backend, interleaved)", ""]
    mrows = []
    for m in doc["ratios"]["ma_vs_plain"]:
        fa, fb = flops.get((m["model"], m["size"])), flops.get((m["plain"], m["size"]))
        fr = fa["true_gflops"] / fb["true_gflops"] if fa and fb and fb["true_gflops"] else None
        mrows.append([m["model"], str(m["size"]), str(m["batch"]), m["backend"], m["precision"], _f(m["median"], ".3f"),
                      f"{m['p10']:.3f}-{m['p90']:.3f}", _f(m["ratio_of_medians"], ".3f"), str(m["n"]), _f(fr, ".4f")])
    out += _table(["model", "size", "batch", "backend", "precision", "time / plain", "p10-p90", "ratio of medians",
                   "rounds", "FLOPs / plain"], mrows, "lrrll" + "r" * 5) if mrows else ["(no MA/plain pair timed)"]
    out += [""]

    pipe = doc.get("pipeline")
    if pipe:
        out += ["## Two-stage pipeline, stage by stage (ms per image, sequential)", ""]
        prow = []
        for b in pipe.get("backends", []):
            ms = b["ms_per_image"]
            prow.append([b["backend"], b["precision"], *(_f(ms[k]["median_ms"]) for k in
                         ("decode", "preprocess", "segment", "postprocess", "classify", "total")),
                         _f(b["overlapped"]["images_per_s"])])
        out += _table(["backend", "precision", "decode", "preprocess", "segment", "post-process", "classify", "total",
                       "overlapped img/s"], prow, "ll" + "r" * 7) if prow else ["(no backend ran)"]
        if pipe.get("backends"):
            b = pipe["backends"][0]
            out += ["", f"Models: {b['segmenter']['model']} ({b['segmenter_size']} px) + {b['classifier']['model']} "
                        f"({b['classifier_size']} px); {b['images']} bundled sample images x {b['runs']} passes."]
        out += [f"- skipped: {s['what']}: {s['reason']}" for s in pipe.get("skipped", [])] + [""]

    if doc.get("flops"):
        out += ["## Parameters and operations (`manet_edge.benchmarks.flops`)", ""]
        out += _table(["model", "size", "params (M)", "thop ops (M)", "paper (M)", "true GFLOPs"],
                      [[f["model"], str(f["size"]), _f(f["params_m"]), _f(f["thop_ops_m"]), _f(f["paper_ops_m"]),
                        _f(f["true_gflops"], ".3f")] for f in doc["flops"]])
        out += [""]
    if doc.get("skipped") or doc.get("failed"):
        out += ["## Skipped and failed", ""]
        out += [f"- skipped {s['what']}: {s['reason']}" for s in doc.get("skipped", [])]
        out += [f"- failed {s['what']}: {s['reason']}" for s in doc.get("failed", [])]
        out += [""]
    if doc.get("notes") or doc.get("power"):
        out += ["## Notes", ""] + [f"- {n}" for n in doc.get("notes", [])]
        out += [f"- power: {_inline(doc.get('power'))}", ""]
    return "\n".join(out)


# -- plots -----------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_latency(doc: dict[str, Any]) -> bytes | None:
    """Horizontal bars: median ms per model (rows) and backend/precision (colours), whiskers to p90."""
    rows = [r for r in doc["results"] if "latency_ms" in r]
    if not rows:
        return None
    plt = _pyplot()
    models = list(dict.fromkeys(f"{r['model']}@{r['size']} b{r['batch']}" for r in rows))
    series = list(dict.fromkeys(f"{r['backend']} {r['precision']}" for r in rows))
    h = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.32 * len(models) * len(series) + 0.5))
    for j, s in enumerate(series):
        ys, xs, err = [], [], []
        for r in rows:
            if f"{r['backend']} {r['precision']}" == s:
                i = models.index(f"{r['model']}@{r['size']} b{r['batch']}")
                lat = r["latency_ms"]
                ys.append(i + (j - (len(series) - 1) / 2) * h)
                xs.append(lat["median_ms"])
                err.append(max(0.0, lat["p90_ms"] - lat["median_ms"]))
        ax.barh(ys, xs, height=h, xerr=[[0] * len(err), err], label=s, capsize=2)
    ax.set_yticks(range(len(models)), models)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median latency per batch (ms, log scale); whisker to p90")
    ax.set_title(f"manet-edge bench: {doc.get('env', {}).get('machine', '')}")
    ax.legend(fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def plot_ma_overhead(doc: dict[str, Any]) -> bytes | None:
    """MA/plain latency ratio per architecture and backend (p10-p90 whiskers), FLOPs ratio as a marker."""
    ratios = doc["ratios"]["ma_vs_plain"]
    if not ratios:
        return None
    plt = _pyplot()
    flops = {(f["model"], f["size"]): f for f in doc.get("flops", [])}
    names = list(dict.fromkeys(f"{m['model']}@{m['size']} b{m['batch']}" for m in ratios))
    series = list(dict.fromkeys(f"{m['backend']} {m['precision']}" for m in ratios))
    w = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names) + 2), 4.2))
    for j, s in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for m in ratios:
            if f"{m['backend']} {m['precision']}" == s:
                xs.append(names.index(f"{m['model']}@{m['size']} b{m['batch']}") + (j - (len(series) - 1) / 2) * w)
                ys.append(m["median"])
                lo.append(max(0.0, m["median"] - m["p10"]))
                hi.append(max(0.0, m["p90"] - m["median"]))
        ax.bar(xs, [y - 1 for y in ys], bottom=1, width=w, yerr=[lo, hi], label=s, capsize=2)
    fx, fy = [], []
    for m in ratios:
        fa, fb = flops.get((m["model"], m["size"])), flops.get((m["plain"], m["size"]))
        if fa and fb and fb["true_gflops"]:
            fx.append(names.index(f"{m['model']}@{m['size']} b{m['batch']}"))
            fy.append(fa["true_gflops"] / fb["true_gflops"])
    if fx:
        ax.scatter(fx, fy, marker="_", s=600, color="black", zorder=3, label="FLOPs ratio")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("latency(variant) / latency(plain), same rounds")
    ax.set_title("Mask-attention (and CBAM) overhead; whiskers: p10-p90 of per-round ratios")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


# -- compare ---------------------------------------------------------------------------------
def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows present in both documents: median latency change and MA/plain ratio change."""
    olds = {_key(r): r for r in old["results"] if "latency_ms" in r}
    lat = []
    for r in new["results"]:
        o = olds.get(_key(r))
        if o is None or "latency_ms" not in r:
            continue
        a, b = o["latency_ms"]["median_ms"], r["latency_ms"]["median_ms"]
        lat.append({"model": r["model"], "size": r["size"], "batch": r["batch"], "backend": r["backend"],
                    "precision": r["precision"], "old_ms": a, "new_ms": b,
                    "change_pct": round(100 * (b - a) / a, 2) if a else None})
    key = lambda m: (m["model"], m["size"], m["batch"], m["backend"], m["precision"])  # noqa: E731
    oldr = {key(m): m for m in old.get("ratios", {}).get("ma_vs_plain", [])}
    ma = [{"model": m["model"], "size": m["size"], "batch": m["batch"], "backend": m["backend"],
           "precision": m["precision"], "old": oldr[key(m)]["median"], "new": m["median"]}
          for m in new["ratios"]["ma_vs_plain"] if key(m) in oldr]
    new_keys = {_key(r) for r in new["results"]}
    only_old = sorted({" ".join(map(str, k)) for k in olds if k not in new_keys})
    return {"latency": lat, "ma_vs_plain": ma, "only_in_old": only_old}


def compare_markdown(diff: dict[str, Any], old_name: str, new_name: str) -> str:
    out = [f"# Benchmark comparison: {new_name} vs {old_name}", ""]
    out += _table(["model", "size", "batch", "backend", "precision", "old median (ms)", "new median (ms)", "change"],
                  [[d["model"], str(d["size"]), str(d["batch"]), d["backend"], d["precision"], _f(d["old_ms"]),
                    _f(d["new_ms"]), _f(d["change_pct"], "+.1f") + "%"] for d in diff["latency"]], "lrrll" + "r" * 3)
    out += ["", "## MA / plain", ""]
    out += _table(["model", "size", "batch", "backend", "precision", "old", "new"],
                  [[d["model"], str(d["size"]), str(d["batch"]), d["backend"], d["precision"], _f(d["old"], ".3f"),
                    _f(d["new"], ".3f")] for d in diff["ma_vs_plain"]], "lrrll" + "rr")
    if diff["only_in_old"]:
        out += ["", "Only in the old file: " + "; ".join(diff["only_in_old"])]
    out += ["", "Latencies from different runs (and machines, or load) differ for reasons other than code; the "
                "ratios measured within each run are the comparable part."]
    return "\n".join(out) + "\n"


# -- writing ---------------------------------------------------------------------------------
def write_all(doc: dict[str, Any], out_dir: str | Path, stem: str = "bench",
              compare_with: str | Path | None = None) -> list[Path]:
    """Write JSON, Markdown and plots (and the comparison) under ``out_dir``; returns the paths."""
    out = Path(out_dir)
    written = []
    if compare_with is not None:
        old = load(compare_with)
        diff = compare(old, doc)
        doc["compare"] = {"with": str(compare_with), **diff}
        path = out / f"{stem}_compare.md"
        atomic_write_text(path, compare_markdown(diff, Path(compare_with).name, f"{stem}.json"))
        written.append(path)
    path = out / f"{stem}.json"
    atomic_write_text(path, json.dumps(doc, indent=1, default=str) + "\n")
    written.append(path)
    path = out / f"{stem}.md"
    atomic_write_text(path, markdown(doc))
    written.append(path)
    for name, draw in (("latency", plot_latency), ("ma_overhead", plot_ma_overhead)):
        data = draw(doc)
        if data is not None:
            path = out / f"{stem}_{name}.png"
            atomic_write_bytes(path, data)
            written.append(path)
    return written
