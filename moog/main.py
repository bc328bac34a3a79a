r"""Trains or evaluates MooG, its on-the-grid baselines, and readouts on any of them.

  python -m moog.main --config=configs/moog_tiny.py --workdir=/tmp/moog_tiny
  python -m moog.main --config=configs/grid_rec_tiny.py --workdir=/tmp/grid_rec_tiny
  python -m moog.main --config=configs/moog_readout_tiny.py \
      --config.init_from=/tmp/moog_tiny --workdir=/tmp/moog_readout_tiny
  python -m moog.main --config=configs/moog_movi.py --mode=describe

`config.task` picks the task ('pretrain', the default, or 'readout') and `config.backbone`
the model ('moog', the default, 'grid' or 'grid_rec'; see `moog/grid_baselines.py`).
See `videolib/app.py` for the flags and `videolib/train.py` for what a run writes.
"""

import ml_collections

from moog import task as moog_task
from moog.readouts import task as readout_task
from videolib import app

TASKS = ('pretrain', 'readout')


def make_task(config: ml_collections.ConfigDict):
  """The task that `config.task` names, on the backbone that `config.backbone` names."""
  kind = config.get('task', 'pretrain')
  if kind == 'pretrain':
    return moog_task.MooGTask(config)
  if kind == 'readout':
    return readout_task.ReadoutTask(config)
  raise ValueError(f'config.task={kind!r} must be one of {TASKS}.')


if __name__ == '__main__':
  app.run(make_task)
