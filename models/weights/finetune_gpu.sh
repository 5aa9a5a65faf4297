#!/usr/bin/env bash
# Fine-tune a bundled LDSE-NET on fresh synthetic slides, inside a fixed wall-time budget, on a machine
# with a GPU and many cores (one H100 + 16 cores, see models/weights/README.md).
#
#   bash models/weights/finetune_gpu.sh RUN_DIR [SYNTH_S] [TRAIN_S]
#
# 1. Renders slides (SEED, default 3: no specimen in common with the seed-2 training data or the seed-1
#    held-out slides) in rounds of 4 slides per core until another round would pass SYNTH_S seconds
#    (default 200). Specimens cycle cells / tissue / tissue / sparse: stained tissue is where the model is
#    weakest. Each field gets the range's two ends plus 10 random planes between them: -10..+10 um, or
#    Z_RANGE ("LO HI", um) when set, which also restricts the fine-tune to that range (the near-focus model).
# 2. Decodes the planes into a tile cache, one dataset per process (autofocus train/finetune --workers).
# 3. A probe of two 150-step epochs measures the step rate (the second epoch's time: the first also pays
#    the start of the data-loader workers); the fine-tune then gets 12 epochs sized to fill TRAIN_S
#    seconds (default 300): lr LR (default 3e-4), x0.3 every 4 epochs, batch 50, the paper's MSE + Adam.
# Writes RUN_DIR/data, RUN_DIR/cache, RUN_DIR/probe and RUN_DIR/finetune (model.pt = best validation epoch).
# CHECKPOINT (default models/weights/ldsenet.pt; models/weights/ldsenet_near.pt with Z_RANGE="-2 6"),
# DEVICE (default cuda), WORKERS (default: all cores) and PYTHON (default python3) can be set.
set -euo pipefail
RUN=${1:?usage: finetune_gpu.sh RUN_DIR [SYNTH_S] [TRAIN_S]}
SYNTH_S=${2:-200}
TRAIN_S=${3:-300}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-$(nproc)}
PYTHON=${PYTHON:-python3}
SEED=${SEED:-3}
LR=${LR:-3e-4}
CHECKPOINT=${CHECKPOINT:-models/weights/ldsenet.pt}
Z_RANGE=${Z_RANGE:-}
if [[ -n "$Z_RANGE" ]]; then
    read -r z_lo z_hi <<<"$Z_RANGE"
    planes=(--z-min "$z_lo" --z-max "$z_hi" --z-step "$("$PYTHON" -c "print($z_hi - ($z_lo))")")
    keep=(--z-range "$z_lo" "$z_hi")
else
    planes=(--z-step 20)
    keep=()
fi
EPOCHS=12
PROBE_STEPS=${PROBE_STEPS:-150}
af() { "$PYTHON" -m autofocus "$@"; }

mkdir -p "$RUN"
start=$(date +%s)
slides=0
round_s=0
while :; do
    elapsed=$(($(date +%s) - start))
    if ((slides > 0 && elapsed + round_s > SYNTH_S)); then break; fi
    slides=$((slides + 4 * WORKERS))
    t0=$(date +%s)
    af dataset synth "$RUN/data" --slides "$slides" --positions 8 "${planes[@]}" --random-planes 10 --seed "$SEED" \
        --specimens cells,tissue,tissue,sparse --workers "$WORKERS" --no-progress >/dev/null
    round_s=$(($(date +%s) - t0))
    echo "synth: $slides slides after $(($(date +%s) - start)) s (round $round_s s)"
done

common=(--checkpoint "$CHECKPOINT" "${keep[@]}" --cache-dir "$RUN/cache" --workers "$WORKERS" --device "$DEVICE"
    --no-progress --seed 0)
t0=$(date +%s)
af finetune "$RUN/data" "${common[@]}" --out "$RUN/probe" --epochs 2 --steps-per-epoch "$PROBE_STEPS" >"$RUN/probe.log"
echo "tile cache + probe: $(($(date +%s) - t0)) s"
steps=$("$PYTHON" - "$RUN/probe/history.json" "$PROBE_STEPS" "$TRAIN_S" "$EPOCHS" <<'EOF'
import json, sys
history, probe_steps, train_s, epochs = json.load(open(sys.argv[1])), int(sys.argv[2]), *map(float, sys.argv[3:])
rate = probe_steps / history[-1]["epoch_s"]  # steps/s of the second epoch, its validation pass included
print(max(100, int(rate * train_s / epochs)))
EOF
)
echo "probe: $steps steps per epoch fit $TRAIN_S s in $EPOCHS epochs"
af finetune "$RUN/data" "${common[@]}" --out "$RUN/finetune" --epochs "$EPOCHS" --steps-per-epoch "$steps" \
    --lr "$LR" --lr-step 4 --lr-gamma 0.3 --patience "$EPOCHS" --max-wall-min "$(((TRAIN_S + 60) / 60))"
echo "total: $(($(date +%s) - start)) s"
