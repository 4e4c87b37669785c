#!/usr/bin/env bash
# Stage-2 experiments at CPU scale (issue 4, item 5): resnet18 plain / MA / CBAM x 3 seeds,
# 128 px, 16 epochs (preset cls-cpu), on images segmented by the default segmenter.
# Runs two trainings at a time, one thread each (2-core machine). About 45-60 min on 2 cores.
# Usage (repo root, 'train' extra installed, ../shared/data present):
#   bash scripts/cls_experiments.sh [SEGMENTER.pt] [DATA]
set -euo pipefail
SEG=${1:-runs/seg_default/best.pt}
DATA=${2:-../shared/data}
OUT=runs/cls_exp
RESULTS=benchmarks/results/cls_cpu
mkdir -p "$OUT" "$RESULTS"
export OMP_NUM_THREADS=1
# Build the segmented-image cache once before the parallel runs share it.
manet-edge train cls --data "$DATA" --segmenter "$SEG" --model resnet18 --out "$OUT/warmup" --epochs 1 --max-steps 1 >/dev/null
jobs=""
for seed in 0 1 2; do for m in resnet18-ma resnet18 resnet18-cbam; do jobs="$jobs $m:$seed"; done; done
# Two trainings at a time; each writes its own log.
echo $jobs | tr ' ' '\n' | xargs -P 2 -I{} bash -c 'm=${1%%:*}; s=${1##*:}; \
  manet-edge train cls --data "$2" --segmenter "$3" --model "$m" --seed "$s" --out "$4/${m}_s$s" > "$4/${m}_s$s.log" 2>&1' _ {} "$DATA" "$SEG" "$OUT"
ckpts=$(for m in resnet18 resnet18-ma resnet18-cbam; do for s in 0 1 2; do echo "$OUT/${m}_s$s/best.pt"; done; done)
manet-edge eval cls $ckpts --data "$DATA" --json "$RESULTS/eval_cls.json" > "$RESULTS/eval_cls.md"
manet-edge gradcam $ckpts --data "$DATA" --out "$RESULTS/gradcam" --overlays 4 > "$RESULTS/gradcam.txt"
