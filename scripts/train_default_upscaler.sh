#!/usr/bin/env bash
# Train one bundled default upscaler (phase 1 of `img2img train srgan`: PSNR-oriented, MSE) on a CPU.
#
#   scripts/train_default_upscaler.sh 4        # -> runs/default-sr-x4/model.safetensors
#   scripts/train_default_upscaler.sh 2        # -> runs/default-sr-x2/model.safetensors
#
# Data: scripts/default_upscaler_data.py (skimage photos minus the held-out ones, plus synthetic
# images). One torch thread and `nice` so the machine stays usable; running it again resumes.
# Environment overrides: DATA, OUT, STEPS, BATCH, IMAGE_SIZE (HR crop), AUGMENT (device-stage ops), THREADS,
# FEAT and BLOCKS (the MSRResNet's width and depth), VAL_EVERY (validation and checkpoint period),
# SAMPLE_EVERY (sample grids).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:?usage: scripts/train_default_upscaler.sh 2|4}
DATA=${DATA:-runs/sr_data}
OUT=${OUT:-runs/default-sr-x$SCALE}
STEPS=${STEPS:-1500}
IMAGE_SIZE=${IMAGE_SIZE:-96}
BATCH=${BATCH:-16}
AUGMENT=${AUGMENT:-hflip}
FEAT=${FEAT:-32}
BLOCKS=${BLOCKS:-6}
VAL_EVERY=${VAL_EVERY:-100}
SAMPLE_EVERY=${SAMPLE_EVERY:-500}
export OMP_NUM_THREADS=${THREADS:-1}
PY=.venv/bin/python
[ -d "$DATA/train" ] || $PY scripts/default_upscaler_data.py "$DATA"
RESUME=()
[ -f "$OUT/checkpoints/last.pt" ] && RESUME=(--resume)
exec nice -n 10 $PY -m img2img train srgan --data "$DATA" --out "$OUT" "${RESUME[@]}" \
  --scale "$SCALE" --arch msrresnet --num-feat "$FEAT" --num-block "$BLOCKS" \
  --steps "$STEPS" --pretrain-steps "$STEPS" --pixel-loss l2 --lr-g 1e-3 --set init=zero_last \
  --batch-size "$BATCH" --image-size "$IMAGE_SIZE" --ema-decay 0.999 --seed 0 --device cpu --num-workers 0 \
  --val-every "$VAL_EVERY" --set checkpoint_every="$VAL_EVERY" --set sample_every="$SAMPLE_EVERY" --set val_batches=1 \
  --set lr_schedule=cosine --set lr_min_factor=0.02 --set tensorboard=false --set augment="$AUGMENT"
