#!/usr/bin/env bash
# Trains on one machine with all of its GPUs: one process, one device mesh over every GPU.
#
# Usage:
#   launch/single_machine_multi_gpu.sh WORKDIR [moog.main flags...]
# Example (paper config on MOVi-E, 8 GPUs, data parallel with fully sharded parameters):
#   launch/single_machine_multi_gpu.sh /data/runs/moog_movi \
#       --config=configs/moog_movi.py --config.data.data_dir=/data/tensorflow_datasets \
#       --config.mesh.fsdp=8
#
# Flags after WORKDIR go to `python -m moog.main` unchanged; without `--config` the tiny
# config is used. Environment:
#   CUDA_VISIBLE_DEVICES  GPUs to use (default: all). The mesh spans exactly these.
#   PYTHON                interpreter with the package installed (default: python), e.g.
#                         after `pip install -c constraints.txt -e . 'jax[cuda12]==0.10.2'`.
#   ENTRY                 entry module (default: moog.main; mgtc.main for MGTC).
#
# No VIDEOLIB_DISTRIBUTED: a single process needs no jax.distributed coordinator
# (VIDEOLIB_DISTRIBUTED=0 is forced so an inherited value cannot make it wait for peers).
# The batch is split over all GPUs, so config.batch_size must be divisible by their number.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
WORKDIR="$1"
shift
PYTHON="${PYTHON:-python}"
ENTRY="${ENTRY:-moog.main}"

config_flag=()
if ! printf '%s\n' "$@" | grep -q -- '^--config='; then
  config_flag=(--config=configs/moog_tiny.py)
fi

if command -v nvidia-smi >/dev/null; then
  echo "GPUs: $(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l) on this machine;" \
       "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-<all>}" >&2
fi

cd "$(dirname "$0")/.."
VIDEOLIB_DISTRIBUTED=0 exec "$PYTHON" -m "$ENTRY" "${config_flag[@]}" --workdir="$WORKDIR" "$@"
