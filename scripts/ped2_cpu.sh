#!/usr/bin/env bash
# The whole pipeline on the real UCSD Ped2 data on a CPU: small frames, narrow networks, the
# paper preset's training semantics with the weight-free providers (DIS flow, foreground
# labels), fusion weights fixed in advance.
#   bash scripts/ped2_cpu.sh [DATA_ROOT] [OUT]      (DATA_ROOT holds ped2/, as data/ped2/; default data)
#   SEED=1 bash scripts/ped2_cpu.sh ...             (another training seed)
#   KEEP=10 bash scripts/ped2_cpu.sh ...            (also keep 10 checkpoints per stage, step_*.pt,
#                                                    for scripts/proxy_study.py; training is unchanged)
# Prints the metrics table; the figures quoted in the README come from this script.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-data}
OUT=${2:-runs/ped2_cpu}
GEN_ITERS=${GEN_ITERS:-1500}
DES_ITERS=${DES_ITERS:-300}
SEED=${SEED:-0}
MAMA=${MAMA:-.venv/bin/mama}
KEEP=${KEEP:-0}
common=(--dataset ped2 --data-root "$ROOT" --preset paper --motion dis --labels foreground --size 64 --base 16
        --batch-size 4 --lr-g 2e-4 --lr-d 2e-5 --lr-a 2e-4 --seed "$SEED" --num-workers 1 --device cpu
        --val-interval 500)
saving() {  # saves every 500 steps, or KEEP evenly spaced kept checkpoints
  if (( KEEP > 0 )); then echo --keep-checkpoints --save-interval $(( $1 / KEEP )); else echo --save-interval 500; fi
}
# A stage whose final.pt exists is not trained again (a recipe stopped later goes on from there).
[[ -f "$OUT/generator/final.pt" ]] || $MAMA train --stage generator "${common[@]}" $(saving "$GEN_ITERS") --iters "$GEN_ITERS" --out "$OUT/generator"
[[ -f "$OUT/destroyer/final.pt" ]] || $MAMA train --stage destroyer "${common[@]}" $(saving "$DES_ITERS") --iters "$DES_ITERS" --generator "$OUT/generator/final.pt" --out "$OUT/destroyer"
$MAMA eval --checkpoint "$OUT/destroyer/final.pt" --dataset ped2 --data-root "$ROOT" --out "$OUT/eval" --device cpu
