r"""Plots a run's training loss and validation next-frame PSNR from its `metrics.jsonl`.

  python benchmarks/plot_metrics.py --workdir=runs/moog_tiny --out=curve.png

The validation panel draws the repeat-previous-frame baseline next to the model (MooG
runs); any other run gets whatever scalars its eval records hold.
"""

import json
import os

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.")
_OUT = flags.DEFINE_string("out", None, "Output image (.png).")
_EVAL_KEYS = flags.DEFINE_list(
    "eval_keys", ["psnr_frames_1plus", "psnr_repeat_previous_frame"],
    "Eval scalars to draw in the right panel.")


def read_records(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"No {path}: pass the workdir of a training run.")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot(records: list[dict], eval_keys: list[str], out: str) -> None:
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] not in ("train", "describe", "preempted")]
  figure, (loss_axis, eval_axis) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
  loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8)
  loss_axis.set(xlabel="step", ylabel="train loss (MSE)", yscale="log", title="training")
  for key in eval_keys:
    points = [(r["step"], r[key]) for r in evals if key in r]
    if points:
      eval_axis.plot(*zip(*points), marker="o", ms=3, label=key)
  eval_axis.set(xlabel="step", ylabel="dB", title="validation")
  eval_axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(out)


def main(argv):
  del argv
  plot(read_records(_WORKDIR.value), _EVAL_KEYS.value, _OUT.value)
  print(_OUT.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
