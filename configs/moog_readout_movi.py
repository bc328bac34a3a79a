r"""Readouts at the paper's scale: full-size heads on a frozen `moog_movi.py` backbone.

Run (after pretraining with configs/moog_movi.py in PRETRAIN_DIR):
  python -m moog.main --config=configs/moog_readout_movi.py \
      --config.init_from=PRETRAIN_DIR --workdir=DIR --config.data.data_dir=MOVI_DIR
On the built-in synthetic data (a backbone pretrained with `moog_movi.py:synthetic`):
  python -m moog.main --config=configs/moog_readout_movi.py:synthetic \
      --config.init_from=PRETRAIN_DIR --workdir=DIR
Arguments as `moog_movi.py` (`synthetic`, `res=128|256`), so `config.data` and
`config.model` are the pretraining run's; a checkpoint trained with another `config.model`
is refused.

Heads (docs/moog_reference.md §10, read from `readout_task.default_readout_config()`): the
recurrent point and box heads and the dense depth head, each a 3-layer cross-attention transformer
of width 512 (8 heads, qkv 512, MLP 2048, 16 Fourier bases), reading `states_concat` (the
official MOVi choice), anchored to their query (our decision, `docs/log/2026-11_readout_experiments_textured_scenes.md`).
Point budget 64 tracks per clip and 8-frame windows as in the official config;
`max_instances=23`, every MOVi-E object.

Tasks: all three heads, on MOVi as on the synthetic data. MOVi's records hold no point
tracks; the pipeline lifts them to 3-D from the object coordinates, depth, segmentation,
normals, 3-D boxes and cameras as TAP-Vid-Kubric does, with 64 queries on each clip's first
frame (`videolib/data/movi_tracks.py`). The synthetic data stores exact tracks.

The depth head trains on the official lattice (every 8th pixel per axis) and is scored at
the ground-truth resolution. Schedule (open upstream, docs/moog_reference.md §14; our
choice, not yet run): batch 32, 100,000 steps, the pretraining optimizer (AdamW, peak lr 1e-4 after 1,000
warmup steps, cosine decay); evaluation every 5,000 steps on 256 validation clips, and
whole 24-frame videos in 8-frame slices with
  python -m moog.main --config=configs/moog_readout_movi.py --mode=eval --workdir=DIR \
      --config.data.num_frames=24 --config.readout.eval_slice_frames=8
Measured from shapes (`--mode=describe`, `:synthetic`): heads 11,324,804 (points;
docs/moog_reference.md §11 computes ≈ 11.3–11.4 M), 10,434,817 (depth), 11,094,916 (boxes)
parameters on the 34,726,787 of the backbone; 52.1 TFLOP per training step at batch 32. No readout of this
config has been trained: that needs an accelerator and a pretrained paper backbone.
`tests/test_readout_task.py` checks the head sizes and (marked slow) one training step
and evaluation on CPU at batch 8, 2-frame clips.
"""

import ml_collections

from configs import moog_movi
from moog import motion_guided
from moog.readouts import task as readout_task


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = moog_movi.get_config(arg)
  config.task = "readout"
  config.backbone = "moog"
  config.init_from = ""

  config.batch_size = 32
  config.eval_batch_size = 32
  config.num_train_steps = 100_000
  config.num_summary_videos = 0

  config.data.features = ("video", "depth", "boxes", "tracks")
  config.data.num_tracks = 64
  config.data.max_instances = 23

  config.motion_guided = motion_guided.default_config()

  config.readout = readout_task.default_readout_config()
  config.readout.depth_subsample_train = 8  # The official depth head's training lattice.
  return config
