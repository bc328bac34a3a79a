"""The tiny MooG config the training tests share: 16x16 synthetic video, 4-frame windows.

`configs/moog_tiny.py` with `moog.model.tiny_model_config()`, batch 8 (one example per
simulated device), on `DATASET` stored under the test's TFDS directory. Tests pass the
fields they care about as dotted overrides (`ConfigDict.update_from_flattened_dict`).
"""

from typing import Any

import ml_collections

from configs import moog_tiny
from moog import model as moog_model

DATASET = "synthetic_movi/16x16_8f_train32_val16"


def tiny_moog_config(data_dir: str, **dotted_overrides: Any) -> ml_collections.ConfigDict:
  """The shared base; `tiny_moog_config(d, **{"optimizer.peak_lr": 3e-3})` overrides."""
  config = moog_tiny.get_config()
  config.model = moog_model.tiny_model_config()
  config.update_from_flattened_dict({
      "data.name": DATASET,
      "data.data_dir": str(data_dir),
      "data.resolution": 16,
      "data.num_frames": 4,
      "data.num_eval_examples": 8,
      "batch_size": 8,
      "eval_batch_size": 8,
      **dotted_overrides,
  })
  return config
