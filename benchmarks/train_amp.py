"""Training step time, fp32 vs bf16 autocast + channels_last, interleaved in one process.

    python -m manet_edge.benchmarks.train_amp [--rounds 6] [--steps 3] [--out benchmarks/results]

Each target is one optimiser step of a real training recipe on a fixed random batch, built
exactly as ``train seg|cls`` builds it (``manet_edge.train.amp``): the default classifier
recipe (resnet18-ma, 128 px, batch 32, Adam, cross-entropy) and the default segmenter recipe
(UNet-ResNet18, 224 px, batch 8, Adam, Dice + BCE). fp32 and bf16 copies of each model are timed
in serpentine rounds (``benchmarks.timing.interleave``), so machine drift cancels in the ratio.
Writes ``<out>/<machine>/train_amp.{md,json}`` with the CPU and its ISA.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from manet_edge.benchmarks import env as envmod
from manet_edge.benchmarks.timing import PerfCounterClock, interleave
from manet_edge.cpu import describe


def _targets(steps: int):
    import torch

    from manet_edge.config import SegModelConfig
    from manet_edge.models import create_model
    from manet_edge.models.unet import create_segmenter
    from manet_edge.train.amp import autocast, prepare_model
    from manet_edge.train.seg import make_seg_loss

    g = torch.Generator().manual_seed(0)
    out = {}
    recipes = {
        "cls resnet18-ma 128px b32": (lambda: create_model("resnet18-ma", in_channels=1, num_classes=5), 128, 32, "cls"),
        "seg unet-resnet18 224px b8": (lambda: create_segmenter(SegModelConfig(image_size=224)), 224, 8, "seg"),
    }
    for name, (build, size, batch, kind) in recipes.items():
        torch.manual_seed(0)
        base = build()
        x = torch.rand(batch, 1, size, size, generator=g)
        m = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
        y = torch.randint(0, 5, (batch,), generator=g)
        seg_loss = make_seg_loss("dice_bce") if kind == "seg" else None
        for amp in ("off", "bf16"):
            model = prepare_model(copy.deepcopy(base).train(), amp)
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step(model=model, opt=opt, amp=amp):
                for _ in range(steps):
                    with autocast(amp):
                        loss = (torch.nn.functional.cross_entropy(model(x, m), y) if seg_loss is None
                                else seg_loss(model(x), m))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

            out[f"{name} {'fp32' if amp == 'off' else 'bf16'}"] = (step, PerfCounterClock())
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="Optimiser steps per timed call.")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--force", action="store_true", help="Time bf16 even where the CPU has no native bf16 (emulated: slow).")
    args = ap.parse_args(argv)
    cpu = describe()
    if not cpu["native_bf16"] and not args.force:
        sys.exit(f"train_amp: {cpu['cpu']} ({', '.join(cpu['isa'])}) has neither AMX-BF16 nor AVX-512 BF16, so "
                 "`--amp auto` trains in fp32 here and a bf16 timing would measure emulation; run it on a CPU "
                 "with native bf16 (or pass --force)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    env = envmod.capture()
    res = interleave(_targets(args.steps), warmup=args.warmup, runs=args.rounds)
    env = envmod.snapshot(env)
    cmd = "python -m manet_edge.benchmarks.train_amp " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = []
    for recipe in sorted({k.rsplit(" ", 1)[0] for k in res.samples}):
        batch = int(recipe.rsplit("b", 1)[1])
        fp, bf = res.stats(f"{recipe} fp32"), res.stats(f"{recipe} bf16")
        ratio = res.ratio(f"{recipe} fp32", f"{recipe} bf16")
        rows.append({"recipe": recipe, "fp32_s_per_step": (fp.median_ms / 1e3) / args.steps, "bf16_s_per_step": (bf.median_ms / 1e3) / args.steps,
                     "fp32_img_per_s": batch * args.steps / (fp.median_ms / 1e3), "bf16_img_per_s": batch * args.steps / (bf.median_ms / 1e3),
                     "speedup_median_of_rounds": ratio.median if ratio else None,
                     "speedup_p10_p90": [ratio.p10, ratio.p90] if ratio else None})
    folder = args.out / env["machine"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# Training step time: fp32 vs bf16 autocast + channels_last", "", f"Command: `{cmd}`", "",
             f"CPU: {cpu['cpu']} ({', '.join(cpu['isa'])}); torch threads {torch.get_num_threads()}; "
             f"{args.rounds} interleaved rounds of {args.steps} steps; load average {env.get('load_average_start')} -> "
             f"{env.get('load_average_end')}.", "",
             "| recipe | fp32 s/step | bf16 s/step | fp32 img/s | bf16 img/s | bf16 speed-up (median of rounds) [p10, p90] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        sp = r["speedup_p10_p90"] or [float("nan")] * 2
        lines.append(f"| {r['recipe']} | {r['fp32_s_per_step']:.3f} | {r['bf16_s_per_step']:.3f} | {r['fp32_img_per_s']:.1f} | "
                     f"{r['bf16_img_per_s']:.1f} | **{r['speedup_median_of_rounds']:.2f}x** [{sp[0]:.2f}, {sp[1]:.2f}] |")
    (folder / "train_amp.md").write_text("\n".join(lines) + "\n")
    (folder / "train_amp.json").write_text(json.dumps({"command": cmd, "env": env, "cpu": cpu, "rows": rows,
                                                       "errors": res.errors}, indent=1, default=str) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
