r"""Pretrains (VideoMAE) or fine-tunes (MGTC / baselines) the video ViT.

  python -m mgtc.main --config=configs/mgtc_tiny.py:stage=pretrain --workdir=/tmp/mgtc_pre
  python -m mgtc.main --config=configs/mgtc_tiny.py:method=mgtc,ratio=0.25 \
      --workdir=/tmp/mgtc_ft --config.init_from=/tmp/mgtc_pre
  python -m mgtc.main --config=configs/mgtc_tiny.py --mode=describe

`config.stage` ('pretrain' | 'finetune') picks the task (`mgtc/task.py`). See
`videolib/app.py` for the flags and `videolib/train.py` for what a run writes.
"""

from mgtc import task
from videolib import app

if __name__ == "__main__":
  app.run(task.make_task)
