r"""Writes the ray-traced MOVi-E stand-in (`movi_testing.py`) for runs without real MOVi.

  python -m videolib.data.write_movi_testing --data_dir=D --size=128 --num_train=64

writes `D/movi_e/128x128/1.0.0`; a MOVi config then reads it with
`--config.data.name=movi_e/128x128 --config.data.data_dir=D`.
"""
from absl import app
from absl import flags

from videolib.data import movi_testing

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where to write movi_e/<S>x<S>/1.0.0.")
_SIZE = flags.DEFINE_integer("size", 128, "Frame size S (square).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 64, "Train videos.")
_NUM_VALIDATION = flags.DEFINE_integer("num_validation", 8, "Validation videos.")


def main(argv):
  del argv
  if not _DATA_DIR.value:
    raise app.UsageError("--data_dir is required.")
  name = movi_testing.write(_DATA_DIR.value, _SIZE.value, _NUM_TRAIN.value,
                           _NUM_VALIDATION.value)
  print(f"Wrote {name} under {_DATA_DIR.value}: --config.data.name={name} "
        f"--config.data.data_dir={_DATA_DIR.value}")


if __name__ == "__main__":
  app.run(main)
