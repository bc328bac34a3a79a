r"""Readouts (points, depth, boxes) on a frozen tiny MooG, Grid or Grid Rec. backbone.

Run (after pretraining with configs/moog_tiny.py, grid_tiny.py or grid_rec_tiny.py):
  python -m moog.main --config=configs/moog_readout_tiny.py \
      --config.init_from=/tmp/moog_tiny --workdir=/tmp/moog_readout_tiny
  python -m moog.main --config=configs/moog_readout_tiny.py:grid_rec \
      --config.init_from=/tmp/grid_rec_tiny --workdir=/tmp/grid_rec_readout_tiny
Evaluate whole 24-frame videos in 8-frame slices (writes eval_validation_step<N>.json):
  python -m moog.main --config=configs/moog_readout_tiny.py --mode=eval \
      --workdir=/tmp/moog_readout_tiny --config.data.num_frames=24 \
      --config.readout.eval_slice_frames=8
On a motion-guided backbone (configs/moog_motion_tiny.py), with its selection:
  python -m moog.main --config=configs/moog_readout_tiny.py \
      --config.init_from=/tmp/moog_motion_tiny --workdir=/tmp/moog_motion_readout_tiny \
      --config.motion_guided.mode=ratio --config.motion_guided.drop_ratio=0.5

Template-matching point and box heads instead of MooG's recurrent ones (measured: they do
not beat never-moving either at 300 steps, docs/results.md):
  python -m moog.main --config=configs/moog_readout_tiny.py --config.init_from=/tmp/moog_tiny \
      --workdir=/tmp/moog_corr_readout --config.readout.tracking_head=correlation \
      --config.readout.map_size=16

The config arg picks the backbone: 'moog' (default), 'grid' or 'grid_rec'. `config.model`
is the tiny pretraining model (read from `moog_tiny.py`, so the two stay in step); a
checkpoint trained with another `config.model`, backbone or token selection
(`config.motion_guided`) is refused. Heads read
`states_concat` (the official MOVi choice), scaled down like the backbone. Protocol and
metric names: `moog/readouts/task.py`; results: `docs/results.md` (the MooG vs Grid table).
"""

import ml_collections

from configs import moog_tiny
from moog import motion_guided
from moog.readouts import task as readout_task


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = moog_tiny.get_config()
  config.task = "readout"
  config.backbone = arg or "moog"
  config.init_from = ""

  config.num_train_steps = 1000
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.log_every_steps = 50
  config.num_summary_videos = 0

  config.data.features = ("video", "depth", "boxes", "tracks")
  config.data.num_tracks = 32
  config.data.max_instances = 5  # The benchmark scenes hold 3-5 objects.
  config.data.random_crop = False

  # Set to the pretraining run's values when it was motion-guided (checked at start).
  config.motion_guided = motion_guided.default_config()

  config.readout = readout_task.default_readout_config()
  config.readout.width = 64
  config.readout.num_layers = 1
  config.readout.num_heads = 4
  # Heads of 64 channels, the MOVi head's head size: heads of 16 cap the QK-normed logits
  # at +-4 and select a track's token much later (docs/log/2026-11_readout_experiments_textured_scenes.md).
  config.readout.qkv_size = 256
  config.readout.mlp_dim = 128
  config.readout.num_fourier_bases = 8
  config.readout.depth_subsample_train = 4

  config.optimizer.peak_lr = 1e-3
  config.optimizer.warmup_steps = 100
  return config
