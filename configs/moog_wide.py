r"""MooG 4x wider and twice as deep as `moog_tiny.py`, on 32² textured scenes: for a GPU.

Run (on an accelerator; 7,609,603 parameters, 780 GFLOP per step at batch 32):
  python -m moog.main --config=configs/moog_wide.py --workdir=DIR
On an image without TensorFlow, from a records file written where TFDS works:
  python -m videolib.data.export_records --config=configs/moog_wide.py --out=R
  python -m moog.main --config=configs/moog_wide.py --workdir=DIR --config.data.records=R
Arguments, comma-separated: `grid` or `grid_rec` (the on-the-grid baselines of issue 4,
same parameter tree), `fine` (encoder stride 2 instead of 4: a 16 x 16 encoder grid and
256 state tokens, 2.48 TFLOP per step), e.g. `--config=configs/moog_wide.py:grid,fine`.

It asks whether the tiny model's limits on this data are its size: tokens 256 wide
(tiny: 64), 4 heads of 64, MLPs 1024, two-layer predictor and corrector, four-layer
decoder, encoder channels 64-128-256; batch 32, peak learning rate 5e-4 after 500 warm-up
steps, a 5,000-step cosine schedule; the rest as `moog_tiny.py`, except that it keeps the
data and initial state it was measured with: the textured motion-class scenes
(`synthetic_movi/32x32_24f`) and the paper's near-identical initial tokens
(`model.state_init='noise'`).

Measured on one H100 (2026-11-22; docs/results.md, "On an accelerator", has the commands;
three runs shared the GPU, 6-33 steps/s each; each run was cut after 8 minutes), next-frame
PSNR on validation frames 1+ (repeat-previous-frame baseline 23.41 dB):
- MooG: 16.70 / 16.72 / 16.66 / 16.76 dB at steps 1k-4k, on the "mean colour" plateau
  that the tiny MooG leaves after 4,000-6,000 steps. With the tiny recipe (batch 8, peak
  1e-3, 12,000-step schedule) still 16.90 dB at step 8,000 (tiny: 19.0); at batch 32 and
  peak 1e-3 (6,000-step schedule) 16.97 dB at step 4,000. Width lengthens the plateau.
  `:fine` (1,500-step schedule): 16.70 / 16.76 dB at steps 1,000 / 1,500.
- `:grid`: 19.30 / 20.32 / 20.57 / 20.82 dB at steps 1k-4k (tiny Grid: 20.7 at step
  8,000 of batch 8). `:grid,fine` (3,500-step schedule): 20.82 / 21.26 dB at 1k / 2k.
"""

import ml_collections

from configs import moog_tiny

_BACKBONES = ("grid", "grid_rec")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = set(filter(None, (arg or "").split(",")))
  unknown = options - {*_BACKBONES, "fine"}
  if unknown or len(options & set(_BACKBONES)) > 1:
    raise ValueError(f"configs/moog_wide.py: argument {arg!r}; known: at most one of "
                     f"{_BACKBONES}, and 'fine'.")
  config = moog_tiny.get_config()
  config.data.name = "synthetic_movi/32x32_24f"
  config.model.state_init = "noise"
  config.model.state_init_scale = 1e-4
  config.num_train_steps = 5000
  config.batch_size = 32
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 250
  config.optimizer.peak_lr = 5e-4
  config.optimizer.warmup_steps = 500

  config.model.token_dim = 256
  config.model.encoder_channels = (64, 128, 256)
  config.model.encoder_strides = (2, 1, 1) if "fine" in options else (2, 2, 1)
  config.model.num_tokens = 256 if "fine" in options else 64
  config.model.predictor = dict(num_layers=2, num_heads=4, qkv_size=256, mlp_dim=1024)
  config.model.corrector = dict(num_layers=2, num_heads=4, qkv_size=256, mlp_dim=1024)
  config.model.decoder = dict(num_layers=4, num_heads=4, qkv_size=256, mlp_dim=1024)
  backbone = options & set(_BACKBONES)
  if backbone:
    config.backbone = backbone.pop()
  return config
