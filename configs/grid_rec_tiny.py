r"""*Grid Rec.* baseline (moog/grid_baselines.py) with exactly the tiny MooG config otherwise.

Run:
  python -m moog.main --config=configs/grid_rec_tiny.py --workdir=/tmp/grid_rec_tiny

Same encoder, decoder, objective, optimizer and parameter tree as `moog_tiny.py`;
recurrent like MooG, but state token i is tied to encoder grid cell i (64 cells = 64
tokens).
"""

import ml_collections

from configs import moog_tiny


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = moog_tiny.get_config()
  config.backbone = "grid_rec"
  return config
