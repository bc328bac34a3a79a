"""The absl entry point shared by `moog.main` and `mgtc.main`.

Flags: `--config` (an ml_collections config file, locked: every field can be overridden as
`--config.field=value`, and an unknown field is an error), `--workdir`, `--mode`
(`train`, `eval`, `describe`). Multi-host runs set `VIDEOLIB_DISTRIBUTED=1` (see
`videolib/distributed.py`) so `jax.distributed.initialize` runs before any computation.
"""

import json
from typing import Callable

import ml_collections
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from videolib import distributed
from videolib.data import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/moog_tiny.py[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, summaries.")
_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "eval", "describe"],
    "train: train (resuming from --workdir); eval: evaluate the newest checkpoint in "
    "--workdir and write eval_<split>_step<N>.json; describe: print parameter counts per "
    "part and the FLOPs of one training step from shapes alone.",
)


def run(make_task: Callable[[ml_collections.ConfigDict], object]) -> None:
  """Parses flags and runs the mode on the task that `make_task(config)` returns."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from videolib import train  # pylint: disable=g-import-not-at-top

    distributed.maybe_initialize()
    pipeline.hide_accelerators_from_tensorflow()
    config = _CONFIG.value
    task = make_task(config)
    if _MODE.value == "describe":
      print(json.dumps(train.describe(config, task), indent=2))
      return
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required for --mode=train and --mode=eval.")
    if _MODE.value == "eval":
      print(json.dumps(train.evaluate(config, _WORKDIR.value, task), indent=2))
      return
    result = train.train_and_evaluate(config, _WORKDIR.value, task)
    logging.info("Finished: %s", result)

  flags.mark_flag_as_required("config")
  app.run(main)
