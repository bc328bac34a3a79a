r"""MooG in the shape of the released Ego4D backbone (35,193,811 parameters).

The model is `model.ego4d_model_config()` (docs/moog_reference.md §12): MOVi sizes with
conv strides 2, 1, 1, 2, 1, 1 and a concatenated encoder PE; the decoder stays cross-attention only.
Clips are 16 frames at 256x256 in [0, 1], as the colab feeds the released checkpoints.
Ego4D itself is not read by this project: evaluation runs on MOVi-E 256x256 (Kubric, as
the colab's demo batch), or on the built-in synthetic data with `:synthetic`.

Released files (upstream README of google-deepmind/representations4d; about 140 MB each):
  B=https://storage.googleapis.com/representations4d/checkpoints
  wget $B/moog_ego4d_backbone_ckpt_164335139.npz          # the backbone, loaded here
  wget $B/moog_ego4d_point_track_head_ckpt_164335139.npz  # point-track readout head
  wget $B/moog_ego4d_box_track_head_ckpt_164335139.npz    # box-track readout head
The heads are `moog.readouts.attention_heads.AttentionPointReadout` / `AttentionBoxReadout`
(sizes: `released_point_head_config()`, `released_box_head_config()`); load and run all
three as the colab does with `moog.released.ego4d` (`load_released_files`, `run_released`; the
heads read `states_corrected_prenorm`). They are not wired into `moog.main`.
`model.decoder_self_attention` (False) gives the decoder blocks a self-attention too,
for a file whose decoder holds such weights (`moog/released/npz_io.py` says so when loading).
Rename its keys to this project's layout (`moog/released/npz_io.py` documents the map; a
`pretrained_model/` wrapper prefix is stripped automatically):
  python -m moog.released.npz_io --released=moog_ego4d_backbone_ckpt_164335139.npz \
      --output=PATH.npz
Run:
  python -m moog.main --config=configs/moog_ego4d.py --config.init_from=PATH.npz \
      --mode=eval --workdir=DIR
`config.init_from` is read by `videolib.checkpoint.load_params`, which loads `.npz`
files strictly (missing, unexpected and mis-shaped names are listed); `--mode=eval`
evaluates those parameters when `--workdir` holds no checkpoint of its own.
"""

import ml_collections

from configs import moog_movi
from moog import model

NUM_FRAMES = 16
RESOLUTION = 256


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: empty, or 'synthetic' for the built-in synthetic data (no download)."""
  if arg not in (None, "", "synthetic"):
    raise ValueError(f"configs/moog_ego4d.py: unknown argument {arg!r}; known: synthetic.")
  config = moog_movi.get_config(f"res={RESOLUTION}" + (",synthetic" if arg else ""))
  config.data.num_frames = NUM_FRAMES
  config.data.random_crop = False
  config.model = model.ego4d_model_config()
  # Evaluation of released weights: 16 frames at 256x256 with 4096 encoder tokens per
  # frame need far more memory per clip than the MOVi training run's 8 x 128x128.
  config.batch_size = 8
  config.eval_batch_size = 8
  return config
