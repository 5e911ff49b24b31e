#!/usr/bin/env bash
# Issue 15 §2: what moves SIFT Flow's class-averaged metrics, measured on `val` only.
# Every lever changes one thing against the same FCN-8s stage (the shipped model's own:
# runs/ship-fcn8s-lite0/config.yaml, 700 steps from the FCN-32s run runs/loss-sampling/p1);
# each run's wall time is in its log.jsonl, its val metrics in metrics.json. Test is never
# read here. Run from the repository root, one at a time (2 CPU cores):
#     bash tools/siftflow_ablation.sh [LEVER ...]      (default: all)
set -euo pipefail
ROOT=${SIFTFLOW_ROOT:-../shared/data/siftflow}
BASE=${ABLATION_BASE:-runs/ship-fcn8s-lite0/config.yaml}
OUT=${ABLATION_OUT:-runs/ablation}
FCNKIT=${FCNKIT:-.venv/bin/fcnkit}

run() {  # run NAME --set ... : one lever, its own run directory
    local name=$1; shift
    [ -f "$OUT/$name/metrics.json" ] && { echo "$name: done"; return; }
    "$FCNKIT" train "$BASE" --run-dir "$OUT/$name" --overwrite --no-progress \
        --set data.root="$ROOT" --set train.time_limit=null "$@"
}

lever() {
    case $1 in
        class-balance)      run class-balance --set loss.class_weights=median_frequency ;;
        class-balance-sqrt) run class-balance-sqrt --set loss.class_weights=median_frequency \
                                --set loss.class_weight_power=0.5 ;;
        schedule-x2)        run schedule-x2 --set train.steps=1400 --set train.eval_every=350 \
                                --set train.checkpoint_every=350 ;;
        # input x1.5 (stride 32 becomes a 12x12 grid on a 256 px image): the same crops of
        # the up-sampled images, evaluated at x1.5 too (`fcnkit eval --scales 1.5`)
        scale-x1.5)         run scale-x1.5 --set "data.augment.scale_range=[1.125, 1.875]" \
                                --set data.augment.crop_size=384 ;;
        *) echo "unknown lever $1" >&2; exit 2 ;;
    esac
}

levers=("$@")
[ ${#levers[@]} -eq 0 ] && levers=(class-balance class-balance-sqrt schedule-x2 scale-x1.5)
for l in "${levers[@]}"; do lever "$l"; done
