#!/usr/bin/env bash
# Stage-2 experiments of the third round (issue 4): every classifier trained on the masks of the
# bundled segmenter, run from its exported ONNX exactly as `manet-edge infer` runs it.
#   - the Adam recipe (1e-3, cosine, class-weighted loss) for 60 epochs instead of 30, 128 px, 3 seeds;
#   - the same at 192 px (2 seeds) and at 256 px (2 seeds, run last);
#   - milder class weights (--balance sqrt), alone (3 seeds) and with label smoothing 0.1 (2 seeds);
#   - AdamW (decoupled weight decay 0.05) with sqrt weights and label smoothing (2 seeds);
#   - plain resnet18 with the 60-epoch recipe (3 seeds), for MA vs plain.
# Two runs at a time, one thread each. Usage (repo root): bash scripts/cls_experiments_v3.sh [DATA]
# Then: manet-edge eval cls runs/cls_v3/*/best.pt --data DATA --cache runs/cache --split val
set -euo pipefail
DATA=${1:-../shared/data}
SEG=manet_edge/assets/models/segmenter.onnx
OUT=runs/cls_v3
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 DATA SEG OUT

run() {  # NAME then train options; skipped when NAME already has its best.pt
  local name=$1; shift
  [ -f "$OUT/$name/best.pt" ] && return 0
  manet-edge train cls --data "$DATA" --segmenter "$SEG" --optimizer adam --lr 1e-3 --balance loss \
    --cache runs/cache --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
}
export -f run

{
  for s in 0 1 2; do echo "r18ma_128_e60_s$s --model resnet18-ma --seed $s --epochs 60"; done
  for s in 0 1; do echo "r18ma_192_e60_s$s --model resnet18-ma --seed $s --epochs 60 --size 192"; done
  for s in 0 1 2; do echo "r18ma_128_e60_sqrt_s$s --model resnet18-ma --seed $s --epochs 60 --balance sqrt"; done
  for s in 0 1; do echo "r18ma_128_e60_sqrt_ls_s$s --model resnet18-ma --seed $s --epochs 60 --balance sqrt --label-smoothing 0.1"; done
  for s in 0 1; do echo "r18ma_128_e60_adamw_ls_s$s --model resnet18-ma --seed $s --epochs 60 --balance sqrt --label-smoothing 0.1 --optimizer adamw --weight-decay 0.05"; done
  for s in 0 1 2; do echo "r18_128_e60_s$s --model resnet18 --seed $s --epochs 60"; done
  for s in 0 1; do echo "r18ma_256_e60_s$s --model resnet18-ma --seed $s --epochs 60 --size 256"; done
} | xargs -P 2 -I{} bash -c 'run {}'
