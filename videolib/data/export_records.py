r"""Writes a config's dataset as a records file, for training where TensorFlow is missing.

  # where TFDS works (47 MB for the tiny configs' synthetic data):
  python -m videolib.data.export_records --config=configs/moog_tiny.py --out=/tmp/syn32.npz
  # anywhere jax, grain and PIL import:
  python -m moog.main --config=configs/moog_tiny.py --workdir=DIR \
      --config.data.records=/tmp/syn32.npz

The file holds the train and eval splits of `config.data` (`videolib/data/records.py`).
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from videolib.data import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file whose `data` is exported, e.g. configs/moog_tiny.py.")
_OUT = flags.DEFINE_string("out", None, "The records file to write (.npz).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  pipeline.export_records(_CONFIG.value.data, _OUT.value)
  logging.info("Wrote %s.", _OUT.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "out"])
  app.run(main)
