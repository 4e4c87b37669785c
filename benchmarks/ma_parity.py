"""Parity of every zoo model's export: torch vs ONNX Runtime, fused vs inlined MA, ORT vs OpenVINO.

``python -m manet_edge.benchmarks.ma_parity [--size 128] [--out benchmarks/results]`` exports each
zoo model (random weights made trained-looking by ``randomize_like_trained``), runs the checks of
:func:`manet_edge.export.verify.verify_export` on random inputs, on lung-like blob masks and on real
sample X-rays segmented by the bundled segmenter, and
writes ``ma_parity.md`` (the table) with the versions used.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path


def run(names: list[str], size: int, openvino: bool = True) -> tuple[str, bool]:
    import torch

    from manet_edge.export.onnx import ExportOptions, build_onnx, source_from_name
    from manet_edge.export.verify import ParityReport, format_table, randomize_like_trained, verify_export

    torch.set_num_threads(1)
    report = ParityReport()
    for name in names:
        t0 = time.perf_counter()
        src = source_from_name("cls", name, size=size)
        randomize_like_trained(src.model, size=size)
        model, _ = build_onnx(src, ExportOptions())
        verify_export(model, src.model, name=name, kind="cls", size=size, openvino=openvino, report=report)
        print(f"{name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return format_table(report.rows), report.ok


def main(argv: list[str] | None = None) -> int:
    from manet_edge.models import list_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--models", nargs="*", default=None, help="zoo names [default: all]")
    ap.add_argument("--no-openvino", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="folder for <name>.md")
    ap.add_argument("--name", default="ma_parity", help="file stem of the results")
    args = ap.parse_args(argv)
    table, ok = run(args.models or list_models(), args.size, not args.no_openvino)
    import onnxruntime
    import openvino
    import torch

    which = ", ".join(args.models) if args.models else "every zoo model"
    command = " ".join(["python -m manet_edge.benchmarks.ma_parity",
                        *(argv if argv is not None else sys.argv[1:])])
    header = (f"# Export parity, {which} ({args.size}x{args.size}, batch 2, fp32)\n\n"
              f"Command: `{command}`  \n"
              f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}, "
              f"python {platform.python_version()}, {platform.machine()}\n\n")
    text = header + table + f"\n\nall within tolerance: {ok}\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
