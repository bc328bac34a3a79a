r"""Trains or evaluates MooG.

  python -m moog.main --config=configs/moog_tiny.py --workdir=/tmp/moog_tiny
  python -m moog.main --config=configs/moog_movi.py --workdir=DIR --config.batch_size=64
  python -m moog.main --config=configs/moog_movi.py --mode=describe

See `videolib/app.py` for the flags and `videolib/train.py` for what a run writes.
"""

from moog import task
from videolib import app

if __name__ == "__main__":
  app.run(task.MooGTask)
