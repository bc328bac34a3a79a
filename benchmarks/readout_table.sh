#!/usr/bin/env bash
# Reruns the MooG vs Grid vs Grid Rec. table of docs/results.md: for every seed, pretrains
# the three backbones with one budget (same steps, batch and data, so the same examples
# seen), trains frozen readouts (points, depth, boxes) on each, runs the parameter-free
# attention point tracker on each pretrained backbone, then prints the table (mean ± std
# over seeds, next to the never-moving and constant-depth baselines on the same queries).
#
#   bash benchmarks/readout_table.sh [OUT_DIR] [SEEDS] [PRETRAIN_STEPS] [READOUT_STEPS]
#
# Defaults: runs/readout_table, seeds "0 1 2", 2,000 pretraining steps (the quick start's
# schedule) and 1,000 readout steps: about 43 minutes per seed, 2 h 10 min in all, on 2
# idle CPU cores (a pretraining takes 6 minutes, a readout 7.5 with its evaluation, a
# tracker run 40 s). The reduced variant that fits one hour (about 20 minutes per seed):
# `bash benchmarks/readout_table.sh runs/readout_table_1h "0 1 2" 1000 300`.
# Finished runs are skipped, so a killed script resumes where it was.
# DATA (default: the configs' synthetic_movi/32x32_24f_objects) picks another dataset,
# e.g. DATA=synthetic_movi/32x32_24f_objects_camera.
set -euo pipefail
OUT=${1:-runs/readout_table}
SEEDS=${2:-0 1 2}
PRETRAIN_STEPS=${3:-2000}
READOUT_STEPS=${4:-1000}
PY=${PY:-python}
DATA_FLAG=() TRACKER_DATA_FLAG=()
if [[ -n ${DATA:-} ]]; then
  DATA_FLAG=(--config.data.name="$DATA") TRACKER_DATA_FLAG=(--data_name="$DATA")
fi
mkdir -p "$OUT"

finished() {  # finished WORKDIR STEPS: the run saved its last checkpoint.
  [[ -d $1/checkpoints/$2 ]]
}

for seed in $SEEDS; do
  for backbone in moog grid grid_rec; do
    run=$OUT/seed$seed
    config=configs/moog_tiny.py
    [[ $backbone != moog ]] && config=configs/${backbone}_tiny.py
    if ! finished "$run/pretrain_$backbone" "$PRETRAIN_STEPS"; then
      $PY -m moog.main --config=$config --workdir="$run/pretrain_$backbone" \
        --config.seed="$seed" --config.num_train_steps="$PRETRAIN_STEPS" \
        --config.eval_every_steps="$PRETRAIN_STEPS" \
        --config.checkpoint_every_steps="$PRETRAIN_STEPS" --config.num_summary_videos=0 \
        "${DATA_FLAG[@]}"
    fi
    if ! finished "$run/readout_$backbone" "$READOUT_STEPS"; then
      $PY -m moog.main --config=configs/moog_readout_tiny.py:$backbone \
        --config.init_from="$run/pretrain_$backbone" --workdir="$run/readout_$backbone" \
        --config.seed="$seed" --config.num_train_steps="$READOUT_STEPS" \
        --config.eval_every_steps="$READOUT_STEPS" \
        --config.checkpoint_every_steps="$READOUT_STEPS" "${DATA_FLAG[@]}"
    fi
    if [[ ! -s $run/attention_$backbone.json ]]; then
      $PY benchmarks/attention_point_tracking.py --workdir="$run/pretrain_$backbone" \
        "${TRACKER_DATA_FLAG[@]}" > "$run/attention_$backbone.json.tmp"
      mv "$run/attention_$backbone.json.tmp" "$run/attention_$backbone.json"
    fi
  done
done
$PY benchmarks/readout_table.py --out_dir="$OUT"
