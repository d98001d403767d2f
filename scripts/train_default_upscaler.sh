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
# SAMPLE_EVERY (sample grids), EMA (the exported EMA's decay), DEGRADATION (bicubic, or photo for the real-world models), LOSS (l2 or
# l1), LR (Adam's learning rate), INIT_FROM (a model to fine-tune, e.g. weights/img2img-sr-x4.safetensors).
#
# The real-world x4 model (the denoise=1 end of `img2img upscale --denoise`), fine-tuned from the clean one
# in two stages (weights/img2img-sr-x4-rw.md; x2 alike with IMAGE_SIZE=64 FEAT=32 BLOCKS=6):
#   DEGRADATION=photo LOSS=l1 LR=2e-4 STEPS=1000 BATCH=8 EMA=0.99 VAL_EVERY=200 SAMPLE_EVERY=100000 INIT_FROM=weights/img2img-sr-x4.safetensors FEAT=48 BLOCKS=10 \
#     NDF=1 AUGMENT=hflip,vflip,rot90 DATA=runs/sr_data OUT=runs/sr-x4-photo scripts/train_default_upscaler.sh 4
#   DEGRADATION=photo LOSS=l1 LR=1e-4 STEPS=2000 BATCH=8 EMA=0.99 VAL_EVERY=250 SAMPLE_EVERY=100000 INIT_FROM=runs/sr-x4-photo/model.safetensors FEAT=48 BLOCKS=10 \
#     NDF=1 AUGMENT=hflip,vflip,rot90 DATA=runs/sr_data OUT=runs/sr-x4-photo-2 scripts/train_default_upscaler.sh 4
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
DEGRADATION=${DEGRADATION:-bicubic}
LOSS=${LOSS:-l2}
LR=${LR:-1e-3}
INIT=(--set init=zero_last)
[ -n "${INIT_FROM:-}" ] && INIT=(--init-from "$INIT_FROM")
SAMPLE_EVERY=${SAMPLE_EVERY:-500}
EMA=${EMA:-0.999}
NDF=${NDF:-64}  # the SRGAN discriminator: unused in phase 1, but in the checkpoint (NDF=1 keeps it small)
export OMP_NUM_THREADS=${THREADS:-1}
PY=${PY:-.venv/bin/python}
[ -d "$DATA/train" ] || $PY scripts/default_upscaler_data.py "$DATA"
RESUME=()
[ -f "$OUT/checkpoints/last.pt" ] && RESUME=(--resume)
exec nice -n 10 $PY -m img2img train srgan --data "$DATA" --out "$OUT" "${RESUME[@]}" \
  --scale "$SCALE" --arch msrresnet --num-feat "$FEAT" --num-block "$BLOCKS" \
  --steps "$STEPS" --pretrain-steps "$STEPS" --pixel-loss "$LOSS" --lr-g "$LR" "${INIT[@]}" --set degradation="$DEGRADATION" \
  --batch-size "$BATCH" --image-size "$IMAGE_SIZE" --ema-decay "$EMA" --seed 0 --device cpu --num-workers 0 \
  --val-every "$VAL_EVERY" --set checkpoint_every="$VAL_EVERY" --set sample_every="$SAMPLE_EVERY" --set val_batches=1 \
  --set ndf="$NDF" --set lr_schedule=cosine --set lr_min_factor=0.02 --set tensorboard=false --set augment="$AUGMENT"
