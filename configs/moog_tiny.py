r"""Tiny MooG on the built-in synthetic data: the quick start, trains on 2 CPU cores.

Run:
  python -m moog.main --config=configs/moog_tiny.py --workdir=runs/moog_tiny

Same model family as `moog_movi.py` (same blocks, recurrence, loss, optimizer), scaled
down: 32x32 frames, 8-frame windows, batch 8, 64 tokens x 64, one-layer predictor and
corrector, two-layer decoder (282,851 parameters).

Measured (2-core x86_64 CPU, see docs/results.md for commands):
- speed: 8.9 train steps/s on an idle machine (8.1 GFLOP per step, 17 % of the measured
  matmul peak; the time loop fully unrolled, compiled in ~11 s), so the 2,000 steps
  take about 4 minutes plus data preparation (~1.5 minutes on first use);
- validation next-frame PSNR (frames 1..7): 16.5 dB at step 500, 16.6 dB at step 2,000;
  repeating the previous frame scores 23.4 dB. The tiny model sits at the "mean colour of
  the video" solution for about 4,000 steps, then its tokens bind to content: with
  `--config.num_train_steps=24000` it reaches 18.5 dB at step 6,000, 19.3 dB at 12,000
  and 19.9 dB at 24,000, still below the repeat baseline; twice the schedule
  (`--config.num_train_steps=48000`, on an H100) is at 20.3 dB at step 32,000
  (docs/results.md has the curves and what was tried). A model 27x larger
  (`moog_wide.py`, on an H100) stays on the plateau longer, not shorter; batch 32
  (`--config.batch_size=32 --config.num_train_steps=8000`, 4x the step time on a CPU)
  leaves it by step 3,000 and is at 19.2 dB at step 4,000. Beating the baseline takes a
  prediction sharper than the true next frame blurred by a 0.9-pixel Gaussian
  (`benchmarks/psnr_ceilings.py`); its 19.9 dB is what the true next frame drawn with
  one colour per 4x4-pixel encoder cell scores (19.8 dB).
"""

import ml_collections

from moog import model
from videolib import optim
from videolib import sharding
from videolib.data import pipeline


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_train_steps = 2000
  config.batch_size = 8
  config.eval_batch_size = 16
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.checkpoint_max_to_keep = 3
  config.checkpoint_async = False  # Blocking saves: a kill loses at most one interval.
  config.init_from = ""
  config.nan_policy = "stop"
  config.num_summary_videos = 4

  config.data = pipeline.default_data_config()
  config.data.name = "synthetic_movi/32x32_24f"
  config.data.num_frames = 8
  config.data.frame_stride = 1
  config.data.resolution = 32
  config.data.random_crop = False
  config.data.features = ("video",)
  config.data.num_eval_examples = 64

  config.model = model.tiny_model_config()
  config.model.num_tokens = 64
  config.model.token_dim = 64
  config.model.encoder_channels = (32, 64)
  config.model.encoder_strides = (2, 2)
  config.model.encoder_fourier_bases = 8
  config.model.decoder_fourier_bases = 8
  config.model.predictor = dict(num_layers=1, num_heads=4, qkv_size=64, mlp_dim=256)
  config.model.corrector = dict(num_layers=1, num_heads=4, qkv_size=64, mlp_dim=256)
  config.model.decoder = dict(num_layers=2, num_heads=4, qkv_size=64, mlp_dim=256)
  config.model.subsample_factor_train = 4
  config.model.subsample_factor_eval = 2
  # The whole clip as straight-line code: 27 % faster steps for 3.4 s more compilation
  # (partial unrolling by 2 or 4 is slower than the rolled loop; docs/results.md).
  config.model.scan_unroll = 0

  config.optimizer = optim.default_optimizer_config()
  config.optimizer.peak_lr = 1e-3
  config.optimizer.warmup_steps = 200

  config.mesh = sharding.default_mesh_config()
  return config
