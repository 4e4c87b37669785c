#!/usr/bin/env bash
# Issue 15 item 6, the paper's comparison at CPU scale on generalisation: plain vs MA vs CBAM
# (resnet18 family) with the chosen recipe (benchmarks/results/loso/RULE.md): seeds on the v2 test
# split, then the leave-one-source-out folds (seed 0) for plain and CBAM (resnet18-ma's are in
# benchmarks/results/loso). Run after scripts/train_defaults_v2.sh (it needs
# runs/defaults_v2/segmenter.onnx; resnet18-ma seed 0 is the default classifier's run).
# Runs go in priority order (one seed of each model first), each skipped when its output exists,
# so an interrupted run continues where it stopped; the summary is made from whatever exists:
#   python scripts/summarise_attention.py
set -euo pipefail
DATA=${DATA:-../shared/data}
SIZE=${SIZE:-128}
EPOCHS=${EPOCHS:-8}
SEG=runs/defaults_v2/segmenter.onnx
FLAGS="--normalisation lung_equalize --augment robust --optimizer adam --lr 1e-3 --balance loss --batch-size 32"
train() {  # MODEL SEED
  local tag; tag=$(echo "$1" | sed 's/resnet18/r18/; s/-//')
  local run=runs/cls_v2/${tag}_robust_${SIZE}_s$2
  # finished = one history line per epoch (best.pt exists from the first epoch on, so it is no sign)
  if [ -f "$run/history.jsonl" ] && [ "$(wc -l < "$run/history.jsonl")" -ge "$EPOCHS" ]; then return; fi
  local resume=""; [ -f "$run/last.pt" ] && resume="--resume"   # an interrupted run continues
  manet-edge train cls $resume --data "$DATA" --segmenter "$SEG" --model "$1" --out "$run" \
    --splits splits/cls.json --size "$SIZE" --epochs "$EPOCHS" --seed "$2" --workers 1 $FLAGS
}
loso() {  # MODEL FOLD
  python scripts/loso.py --segmenter "$SEG" --model "$1" --recipes robust --folds "$2" \
    --size "$SIZE" --epochs "$EPOCHS" --out "benchmarks/results/attention_v2/loso_$1_${2%%:*}"
}
train resnet18 0; train resnet18-cbam 0
train resnet18-ma 1; train resnet18 1; train resnet18-cbam 1
loso resnet18 covid:ieee; loso resnet18-cbam covid:ieee
loso resnet18 tb:shenzhen+montgomery; loso resnet18-cbam tb:shenzhen+montgomery
train resnet18-ma 2; train resnet18 2; train resnet18-cbam 2
loso resnet18 normal:cxrdb; loso resnet18-cbam normal:cxrdb
python scripts/summarise_attention.py
