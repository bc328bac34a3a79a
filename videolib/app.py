"""The absl entry point shared by `moog.main` and `mgtc.main`.

Flags: `--config` (an ml_collections config file, locked: every field can be overridden as
`--config.field=value`, and an unknown field is an error), `--workdir`, `--mode`
(`train`, `eval`, `describe`), `--library_logs` (show libraries' INFO lines, hidden by
default). Multi-host runs set `VIDEOLIB_DISTRIBUTED=1` (see
`videolib/distributed.py`) so `jax.distributed.initialize` runs before any computation.
"""

import json
import logging as std_logging
import os
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

_LIBRARY_LOGS = flags.DEFINE_bool(
    "library_logs", False,
    "Show the INFO lines of libraries (orbax, TFDS, grain, ...); by default only this "
    "project's INFO lines and everyone's warnings and errors are shown.")

# Directories of this project's packages: their INFO lines are the ones a user reads.
_PROJECT_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), package) + os.sep
    for package in ("videolib", "moog", "mgtc", "configs", "benchmarks"))


class _ProjectInfoOnly(std_logging.Filter):
  """Passes warnings and errors, and INFO lines logged from this project's own files."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.WARNING
            or os.path.abspath(record.pathname).startswith(_PROJECT_DIRS))


def quiet_library_logs() -> None:
  """Hides libraries' INFO lines (about 40 per orbax save) on the absl handler."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _ProjectInfoOnly) for f in handler.filters):
    handler.addFilter(_ProjectInfoOnly())


def run(make_task: Callable[[ml_collections.ConfigDict], object]) -> None:
  """Parses flags and runs the mode on the task that `make_task(config)` returns."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from videolib import train  # pylint: disable=g-import-not-at-top

    if not _LIBRARY_LOGS.value:
      quiet_library_logs()
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
    if result.get("complete"):
      print(result["message"])
    else:
      logging.info("Run ended; every logged metric is in %s/metrics.jsonl.", _WORKDIR.value)

  flags.mark_flag_as_required("config")
  app.run(main)
