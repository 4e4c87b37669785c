#!/usr/bin/env bash
# Stage-2 experiments, second recipe (the one the bundled default classifier uses): Adam 1e-3 with
# cosine decay, class-weighted loss, 30 epochs, 128 px; resnet18 plain vs MA, 3 seeds.
# Usage (repo root): bash scripts/cls_experiments_adam.sh [SEGMENTER.pt] [DATA]
set -euo pipefail
SEG=${1:-runs/seg_default/best.pt}
DATA=${2:-../shared/data}
OUT=runs/cls_adam
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
jobs=""
for seed in 0 1 2; do for m in resnet18-ma resnet18; do jobs="$jobs $m:$seed"; done; done
echo $jobs | tr ' ' '\n' | xargs -P 2 -I{} bash -c 'm=${1%%:*}; s=${1##*:}; [ -f "$4/${m}_s$s/best.pt" ] && [ "$(wc -l < "$4/${m}_s$s/history.jsonl")" -ge 30 ] && exit 0; \
  manet-edge train cls --data "$2" --segmenter "$3" --model "$m" --seed "$s" --optimizer adam --lr 1e-3 --epochs 30 \
  --balance loss --out "$4/${m}_s$s" > "$4/${m}_s$s.log" 2>&1' _ {} "$DATA" "$SEG" "$OUT"
