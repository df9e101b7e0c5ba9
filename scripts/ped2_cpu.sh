#!/usr/bin/env bash
# The whole pipeline on the real UCSD Ped2 data on a CPU: small frames, narrow networks, the
# paper preset's training semantics with the weight-free providers (DIS flow, foreground
# labels), fusion weights fixed in advance.
#   bash scripts/ped2_cpu.sh [DATA_ROOT] [OUT]      (DATA_ROOT holds ped2/; default ../shared/datasets)
#   SEED=1 bash scripts/ped2_cpu.sh ...             (another training seed)
# Prints the metrics table; the figures quoted in the README come from this script.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-../shared/datasets}
OUT=${2:-runs/ped2_cpu}
GEN_ITERS=${GEN_ITERS:-1500}
DES_ITERS=${DES_ITERS:-300}
SEED=${SEED:-0}
MAMA=${MAMA:-.venv/bin/mama}
common=(--dataset ped2 --data-root "$ROOT" --preset paper --motion dis --labels foreground --size 64 --base 16
        --batch-size 4 --lr-g 2e-4 --lr-d 2e-5 --lr-a 2e-4 --seed "$SEED" --num-workers 1 --device cpu
        --save-interval 500 --val-interval 500)
# A stage whose final.pt exists is not trained again (a recipe stopped later goes on from there).
[[ -f "$OUT/generator/final.pt" ]] || $MAMA train --stage generator "${common[@]}" --iters "$GEN_ITERS" --out "$OUT/generator"
[[ -f "$OUT/destroyer/final.pt" ]] || $MAMA train --stage destroyer "${common[@]}" --iters "$DES_ITERS" --generator "$OUT/generator/final.pt" --out "$OUT/destroyer"
$MAMA eval --checkpoint "$OUT/destroyer/final.pt" --dataset ped2 --data-root "$ROOT" --out "$OUT/eval" --device cpu
