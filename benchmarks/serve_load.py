"""Bounded load test of ``manet-edge serve`` (Triton on 127.0.0.1) against in-process ``infer``.

N concurrent clients each send M requests (the bundled samples in turn, encoded PNG bytes) over
HTTP and gRPC; a hard time limit ends a run early (marked ``truncated``). Reports throughput and
p50/p90/p99 latency per protocol, and the in-process ``infer`` rate (``run_infer``: the same
pipeline, decode to CSV, over the same N x M images as files) measured in the same run, with the
ratio served / in-process (in-process is run once before and once after the server, and their mean
is the reference). Loopback only; the server is always stopped.

Run (needs the serve extra and a tritonserver binary; docs/serving.md):
``python -m manet_edge.benchmarks.serve_load --clients 4 --requests 25 --out benchmarks/results/serve``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / "manet_edge" / "assets" / "samples"


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 2) for q in (50, 90, 99)} | {
        "mean_ms": round(float(arr.mean()), 2)}


def load(url: str, protocol: str, blobs: list[bytes], clients: int, requests: int, limit_s: float) -> dict[str, Any]:
    from manet_edge.serve.client import PipelineClient

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = [0.0]
    start = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        with PipelineClient(url, protocol=protocol, timeout_s=limit_s) as client:
            client.classify(blobs[k % len(blobs)])  # warm-up, not counted
            start.wait()
            for i in range(requests):
                if time.perf_counter() > deadline[0]:
                    return
                t0 = time.perf_counter()
                try:
                    client.classify(blobs[(k * requests + i) % len(blobs)])
                except Exception as exc:  # counted, reported
                    with lock:
                        errors.append(str(exc)[:200])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + limit_s + 60  # until the barrier: warm-ups
    start.wait()
    t0 = time.perf_counter()
    deadline[0] = t0 + limit_s
    for t in threads:
        t.join(limit_s + 30)
    wall = time.perf_counter() - t0
    done = len(latencies)
    return {"protocol": protocol, "clients": clients, "requests_per_client": requests, "completed": done,
            "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 3),
            "throughput_rps": round(done / wall, 2) if wall > 0 else None,
            "truncated": done + len(errors) < clients * requests, **_percentiles(latencies or [float("nan")])}


def in_process(blobs_paths: list[Path], total: int, work: Path) -> dict[str, Any]:
    from manet_edge.commands.infer import run_infer

    work.mkdir()
    folder = work / "images"
    folder.mkdir()
    for i in range(total):
        src = blobs_paths[i % len(blobs_paths)]
        shutil.copyfile(src, folder / f"{i:05d}_{src.name}")
    out = work / "infer"
    t0 = time.perf_counter()
    code = run_infer(folder=folder, out=out, progress=False)
    wall = time.perf_counter() - t0
    meta = json.loads((out / "predictions.json").read_text())["meta"]
    return {"exit_code": code, "images": total, "command_wall_s": round(wall, 3),
            "pipeline_wall_s": meta["timings"]["wall_s"], "images_per_s": meta["timings"]["images_per_s"],
            "config": meta["config"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    ap.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--queue-delay-us", type=int, default=2000)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="threads per model call in the server")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per protocol run (hard stop)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/serve"))
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)

    from manet_edge.cpu import describe
    from manet_edge.serve.repository import Batching, write_serve_repository
    from manet_edge.serve.tritonserver import TritonServer, find_tritonserver, free_port

    load_before = os.getloadavg()
    paths = sorted(SAMPLES.glob("*.png"))
    blobs = [p.read_bytes() for p in paths]
    with tempfile.TemporaryDirectory(prefix="manet-edge-serve-bench-") as tmp:
        work = Path(tmp)
        repo = write_serve_repository(work / "repo", batching=Batching(args.max_batch, args.queue_delay_us,
                                                                       args.instances), threads=args.threads)
        server = TritonServer(repo, find_tritonserver(), http_port=free_port(), grpc_port=free_port(),
                              metrics_port=free_port(), exit_timeout_s=5, log_path=work / "triton.log")
        runs = []
        before = in_process(paths, args.clients * args.requests, work / "before")
        try:
            server.start()
            server.wait_ready(300, model="manet_edge")
            for protocol in args.protocols:
                url = server.http_url if protocol == "http" else server.grpc_url
                runs.append(load(url, protocol, blobs, args.clients, args.requests, args.time_limit))
        finally:
            server.stop()
        after = in_process(paths, args.clients * args.requests, work / "after")
    local = {"images": before["images"], "before": before, "after": after,
             "images_per_s": round((before["images_per_s"] + after["images_per_s"]) / 2, 3)}
    for r in runs:
        r["vs_in_process"] = round(r["throughput_rps"] / local["images_per_s"], 3) if r["throughput_rps"] else None
    result = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m manet_edge.benchmarks.serve_load " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": describe(), "cpu_count": os.cpu_count(),
              "server": {"max_batch": args.max_batch, "queue_delay_us": args.queue_delay_us,
                         "instances": args.instances, "threads": args.threads, "backend": "onnxruntime"},
              "load_average_1_5_15min": {"start": [round(x, 2) for x in load_before],
                                         "end": [round(x, 2) for x in os.getloadavg()]},
              "serve": runs, "in_process_infer": local}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "serve_load" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# serve load test{(' (' + args.tag + ')') if args.tag else ''}", "",
             f"`{result['command']}`", "",
             f"CPU: {result['cpu']} ({result['cpu_count']} cores, shared VM); {result['created']}; server: "
             f"max batch {args.max_batch}, queue delay {args.queue_delay_us} us, {args.instances} instance(s), "
             "onnxruntime fp32, bundled models; 127.0.0.1; load average (1 min) "
             f"{result['load_average_1_5_15min']['start'][0]} at the start, "
             f"{result['load_average_1_5_15min']['end'][0]} at the end.", "",
             "| run | completed | errors | req/s | p50 ms | p90 ms | p99 ms | vs in-process |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['protocol']}, {r['clients']} clients x {r['requests_per_client']} | {r['completed']} | "
                     f"{r['errors']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | "
                     f"{r['vs_in_process']} |")
    lines.append(f"| in-process `infer`, {local['images']} files (mean of one run before and one after the "
                 f"server: {before['images_per_s']}, {after['images_per_s']}) | {local['images']} | - | "
                 f"{local['images_per_s']} | - | - | - | 1 |")
    lines += ["", "Ratios compare runs of one process a few seconds apart on a VM shared with other jobs; "
              "the before/after spread of the in-process rate shows how much the load moved meanwhile."]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
