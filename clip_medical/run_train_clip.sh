#!/usr/bin/env bash
# The guide's training examples, runnable as they are: a single run, 5-fold cross-validation with
# early stopping, a multi-config run, then zero-shot prediction with the single run's best model.
#
#   bash clip_medical/run_train_clip.sh                                   # no data given: DEMO (below)
#   DATA_DIR=single_label_data CLASS_TEXTS_FILE=class_texts.json bash clip_medical/run_train_clip.sh
#
# Overrides (environment): DATA_DIR, OUTPUT_DIR (default runs/clip_medical), CLASS_TEXTS_FILE,
# TEXT_ENCODER (default bert-base-chinese), CONFIG_FILE (default clip_medical/train_clip_config.json),
# EPOCHS, BATCH_SIZE, GPU_ID, PYTHON. For several GPUs replace "$PYTHON" by
# "accelerate launch --multi_gpu --num_processes 8".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # repository root

PYTHON=${PYTHON:-python}
OUTPUT_DIR=${OUTPUT_DIR:-runs/clip_medical}
GPU_ID=${GPU_ID:-0}

if [[ -z "${DATA_DIR:-}" ]]; then
  # DEMO ONLY: synthetic images in three class folders and a tiny, randomly initialised BERT with a
  # character vocabulary, because bert-base-chinese cannot be downloaded offline. It shows that
  # every mode runs end to end in about two minutes on two CPU cores; its numbers mean nothing.
  echo "DATA_DIR not set: training on generated DEMO data (not medical, not pretrained)"
  DEMO_DIR="$OUTPUT_DIR/demo_inputs"
  $PYTHON -m clip_medical.demo --output-dir "$DEMO_DIR"
  export HF_HUB_OFFLINE=1                      # the demo never downloads anything
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors: extra threads only add overhead
  DATA_DIR="$DEMO_DIR/data"
  CLASS_TEXTS_FILE="$DEMO_DIR/class_texts.json"
  TEXT_ENCODER="$DEMO_DIR/text_encoder"
  CONFIG_FILE="$DEMO_DIR/train_clip_config.json"  # two tiny entries: StarNet and ResNet-18
  SIZES=(--embed-dim 64 --batch-size 8 --epochs 4 --img-size 64 --num-workers 0 --learning-rate 3e-3 --no-pretrained)
  N_SPLITS=3
else
  TEXT_ENCODER=${TEXT_ENCODER:-bert-base-chinese}
  CONFIG_FILE=${CONFIG_FILE:-clip_medical/train_clip_config.json}
  SIZES=(--epochs "${EPOCHS:-100}" --batch-size "${BATCH_SIZE:-32}")
  N_SPLITS=5
fi
TEXTS=()
if [[ -n "${CLASS_TEXTS_FILE:-}" ]]; then TEXTS=(--class-texts-file "$CLASS_TEXTS_FILE"); fi

echo "== 1/4 single run -> $OUTPUT_DIR/single"
$PYTHON clip_medical/train_clip.py --data-dir "$DATA_DIR" --output-dir "$OUTPUT_DIR/single" \
  --image-encoder starnet_dual_pyramid_rcf --text-encoder "$TEXT_ENCODER" "${TEXTS[@]}" "${SIZES[@]}" \
  --gpu-id "$GPU_ID"

echo "== 2/4 ${N_SPLITS}-fold cross-validation with early stopping -> $OUTPUT_DIR/cv"
$PYTHON clip_medical/train_clip.py --data-dir "$DATA_DIR" --output-dir "$OUTPUT_DIR/cv" \
  --image-encoder starnet_dual_pyramid_rcf --text-encoder "$TEXT_ENCODER" "${TEXTS[@]}" "${SIZES[@]}" \
  --use-cv --n-splits "$N_SPLITS" --early-stopping-patience 30 --early-stopping-min-delta 0.1 \
  --early-stopping-monitor val_acc --gpu-id "$GPU_ID"

echo "== 3/4 multi-config ($CONFIG_FILE) -> $OUTPUT_DIR/multi"
$PYTHON clip_medical/train_clip.py --data-dir "$DATA_DIR" --output-dir "$OUTPUT_DIR/multi" \
  --text-encoder "$TEXT_ENCODER" "${TEXTS[@]}" "${SIZES[@]}" --multi-config --config-file "$CONFIG_FILE" \
  --gpu-id "$GPU_ID"

echo "== 4/4 zero-shot prediction with the single run's exported best model"
$PYTHON clip_medical/predict.py --export "$OUTPUT_DIR/single/export" --images "$DATA_DIR" \
  --output "$OUTPUT_DIR/single/predictions.csv" | tail -n 5
echo "done: outputs under $OUTPUT_DIR (cv summary: $OUTPUT_DIR/cv/cv_summary.json)"
