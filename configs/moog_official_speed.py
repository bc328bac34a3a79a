r"""The official MooG release's two timing models, for side-by-side speed comparisons.

`:tiny` is the small official-architecture model (1,935,747 parameters): 64x64 frames,
8-frame clips, batch 8, 64 tokens x 128; convs 32-64-64-128-128-128 with strides
1,1,1,2,1,2; predictor and corrector 2 layers / 4 heads / qkv 128 / MLP 512; decoder
2 / 2 / 128 / 512, cross-attention only; Fourier bases 20 / 16; lattice subsampling 4.
`:paper` is the released MOVi configuration (34,726,787 parameters) at 128x128, 8 frames,
batch 1. Both without rematerialisation, with the paper's noise initial state and the
time loop unrolled, which is how the official code runs them.

Parameter counts (must equal the official ones):
  python -m moog.main --config=configs/moog_official_speed.py:tiny --mode=describe
This project's step (benchmarks/moog_vs_official.py runs it beside the official code's):
  python benchmarks/moog_train_speed.py --config=configs/moog_official_speed.py:tiny \
      --steps=10 --pipeline_batches=0 --forward
Measured (idle 2-core x86_64 CPU, 2026-12-07, alternating with the official code;
docs/results.md "Against the official MooG", `benchmarks/moog_vs_official.py`): tiny
3.36 s per step against the official 4.20 s (1.25x), paper 12.83 s against 19.87 s
(1.55x); forward passes 0.54 / 3.04 s against 0.87 / 3.36 s.
"""

import ml_collections

from configs import moog_movi
from configs import moog_tiny
from moog import model

PRESETS = ("tiny", "paper")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in PRESETS:
    raise ValueError(f"configs/moog_official_speed.py needs one of {PRESETS} after ':', "
                     f"got {arg!r}.")
  if arg == "paper":
    config = moog_movi.get_config("synthetic")
    config.batch_size = 1
    config.data.name = "synthetic_movi/128x128_8f_train8_val8"
  else:
    config = moog_tiny.get_config()
    config.batch_size = 8
    config.data.name = "synthetic_movi/64x64_8f_train8_val8"
    config.data.resolution = 64
    config.model = model.paper_movi_model_config()
    config.model.num_tokens = 64
    config.model.token_dim = 128
    config.model.encoder_channels = (32, 64, 64, 128, 128, 128)
    config.model.predictor = dict(num_layers=2, num_heads=4, qkv_size=128, mlp_dim=512)
    config.model.corrector = dict(num_layers=2, num_heads=4, qkv_size=128, mlp_dim=512)
    config.model.decoder = dict(num_layers=2, num_heads=2, qkv_size=128, mlp_dim=512)
    config.model.subsample_factor_train = 4
    config.model.subsample_factor_eval = 4
  config.eval_batch_size = config.batch_size
  config.data.num_frames = 8
  config.data.random_crop = False
  config.model.remat = False
  config.model.scan_unroll = 0
  return config
