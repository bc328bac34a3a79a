r"""Tiny MooG whose corrector sees only moving encoder tokens (moog/motion_guided.py).

Run:
  python -m moog.main --config=configs/moog_motion_tiny.py --workdir=/tmp/moog_motion_tiny
  python -m moog.main --config=configs/moog_motion_tiny.py:threshold --workdir=...
  python -m moog.main --config=configs/moog_motion_tiny.py:gather --workdir=...

Exactly `moog_tiny.py` plus `config.motion_guided`. The argument picks the variant:
'ratio' (default: mask the 50% least-moving encoder tokens of every frame t >= 1),
'gather' (the same selection, with the kept tokens gathered so the corrector's cost
drops), 'threshold' (keep tokens whose mean |frame difference| > 0.02) or 'off'
(identical to `moog_tiny.py`).
"""

import ml_collections

from configs import moog_tiny
from moog import motion_guided

VARIANTS = ("ratio", "gather", "threshold", "off")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "ratio"
  if variant not in VARIANTS:
    raise ValueError(f"configs/moog_motion_tiny.py:{variant} must be one of {VARIANTS}.")
  config = moog_tiny.get_config()
  config.motion_guided = motion_guided.default_config()
  config.motion_guided.mode = "ratio" if variant == "gather" else variant
  config.motion_guided.gather = variant == "gather"
  return config
