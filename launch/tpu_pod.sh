#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: creates it (or reuses it), installs this checkout on
# every worker, then runs the same `python -m moog.main` on all workers at once.
#
# Usage:
#   launch/tpu_pod.sh TPU_NAME ZONE ACCELERATOR_TYPE WORKDIR [moog.main flags...]
# Example (paper config, v5p-32 = 16 chips on 4 hosts, batch 128 = 8 per chip):
#   GCS_BUCKET=my-bucket launch/tpu_pod.sh moog-v5p-32 us-east5-a v5p-32 \
#       /mnt/gcs/runs/moog_movi \
#       --config=configs/moog_movi.py --config.data.data_dir=gs://my-bucket/tensorflow_datasets
#
# WORKDIR must be one directory that every worker sees: checkpoints are written by all
# workers, metrics and TensorBoard by worker 0. With GCS_BUCKET set, the bucket is mounted
# with gcsfuse at /mnt/gcs on every worker, so use a WORKDIR under /mnt/gcs (as above).
# Data is read from gs:// directly (ArrayRecord copies; see docs/data.md). Flags after
# WORKDIR go to `python -m moog.main` unchanged; without `--config` the tiny config is used.
# Environment:
#   PROJECT          gcloud project (default: gcloud's configured project).
#   RUNTIME_VERSION  TPU VM software version (default: tpu-ubuntu2204-base; v6e slices
#                    need v2-alpha-tpuv6e).
#   SPOT=1           create the slice as a Spot VM (preemptible; the trainer saves a
#                    checkpoint on SIGTERM and resumes from WORKDIR when rerun).
#   GCS_BUCKET       bucket to mount at /mnt/gcs on every worker (see above).
#   ENTRY            entry module (default: moog.main; mgtc.main for MGTC).
#   SKIP_INSTALL=1   only run (the checkout and venv from an earlier call are reused).
#
# Every worker runs with VIDEOLIB_DISTRIBUTED=1: jax.distributed.initialize() finds the
# coordinator, the process count and the process id from the TPU metadata itself. The
# checkout (tracked and untracked-but-not-ignored files, uncommitted edits included) is
# copied to ~/offgrid_video on every worker and installed into ~/venv (Python 3.11) with
# `jax[tpu]` at the version constraints.txt pins.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
TPU_NAME="$1"
ZONE="$2"
ACCELERATOR_TYPE="$3"
WORKDIR="$4"
shift 4
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
ENTRY="${ENTRY:-moog.main}"
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"

tpu() {
  gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}
}
on_all_workers() {
  tpu ssh "$TPU_NAME" --worker=all --command="$1"
}

# ---- Create or reuse the slice -------------------------------------------------------------
if tpu describe "$TPU_NAME" >/dev/null 2>&1; then
  echo "Reusing TPU VM $TPU_NAME in $ZONE." >&2
else
  echo "Creating TPU VM $TPU_NAME ($ACCELERATOR_TYPE, $RUNTIME_VERSION) in $ZONE." >&2
  tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
      --version="$RUNTIME_VERSION" ${SPOT:+--spot}
fi

# ---- Install this checkout on every worker -------------------------------------------------
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  archive_dir="$(mktemp -d)"
  trap 'rm -rf "$archive_dir"' EXIT
  archive="$archive_dir/offgrid_video.tar.gz"
  (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
      | tar --null -T - -czf "$archive")
  tpu scp "$archive" "$TPU_NAME:offgrid_video.tar.gz" --worker=all
  jax_version="$(sed -n 's/^jax==//p' "$REPO_ROOT/constraints.txt")"
  on_all_workers "set -e
    sudo apt-get -qq update && sudo apt-get -qq install -y python3.11 python3.11-venv
    rm -rf ~/offgrid_video && mkdir -p ~/offgrid_video
    tar -xzf ~/offgrid_video.tar.gz -C ~/offgrid_video
    [ -d ~/venv ] || python3.11 -m venv ~/venv
    ~/venv/bin/pip install -q --upgrade pip
    cd ~/offgrid_video && ~/venv/bin/pip install -q -c constraints.txt -e . 'jax[tpu]==${jax_version}'"
  if [[ -n "${GCS_BUCKET:-}" ]]; then
    on_all_workers "set -e
      if ! command -v gcsfuse >/dev/null; then
        echo 'deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main' | sudo tee /etc/apt/sources.list.d/gcsfuse.list
        curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
        sudo apt-get -qq update && sudo apt-get -qq install -y gcsfuse
      fi
      sudo mkdir -p /mnt/gcs && sudo chown \$USER /mnt/gcs
      mountpoint -q /mnt/gcs || gcsfuse --implicit-dirs '$GCS_BUCKET' /mnt/gcs"
  fi
fi

# ---- Run the same program on every worker --------------------------------------------------
config_flag=""
if ! printf '%s\n' "$@" | grep -q -- '^--config='; then
  config_flag="--config=configs/moog_tiny.py"
fi
printf -v flags ' %q' $config_flag --workdir="$WORKDIR" "$@"
on_all_workers "cd ~/offgrid_video && VIDEOLIB_DISTRIBUTED=1 ~/venv/bin/python -m $ENTRY$flags"
