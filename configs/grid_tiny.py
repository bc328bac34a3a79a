r"""*Grid* baseline (moog/grid_baselines.py) with exactly the tiny MooG config otherwise.

Run:
  python -m moog.main --config=configs/grid_tiny.py --workdir=/tmp/grid_tiny

Same encoder, decoder, objective, optimizer and parameter tree as `moog_tiny.py`; the
state is the current frame's 8 x 8 encoder grid (64 tokens, as MooG's 64), no recurrence.
"""

import ml_collections

from configs import moog_tiny


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = moog_tiny.get_config()
  config.backbone = "grid"
  return config
