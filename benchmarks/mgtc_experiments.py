r"""Reruns the MGTC experiment table on the synthetic motion-class data (docs/mgtc_results.md).

  /work/venv/bin/python benchmarks/mgtc_experiments.py --root=/tmp/mgtc_exp/runs \
      --data_dir=/tmp/mgtc_exp/tfds

Every row is one fine-tuning run of `configs/mgtc_tiny.py:<arg>` through the shared trainer
(the same as `python -m mgtc.main`, whose command the table prints), optionally from one
shared VideoMAE pretraining run (`--pretrain_steps > 0`), followed by a throughput
measurement of the trained model: eval forward passes (token selection included) on
batches of `--throughput_batch` clips, timed after compilation, in clips/s.

A row whose workdir already holds its final eval is not retrained (delete the workdir to
rerun it). `--rows=a8,b25` runs a subset. `--seeds=0,1,2` trains every row once per seed
(`config.seed`: initialisation, data order, crops and random rules; workdirs
`<root>/seed<k>/<row>`) and reports top-1 as mean ± std over the seeds (sample std, n - 1);
`--throughput_seconds=0` skips the clips/s timing (e.g. while other jobs share the cores).
The table goes to stdout and, as JSON, to `<root>/results.json`.
"""
import json
import os
import time

import jax
import numpy as np
from absl import app
from absl import flags
from absl import logging

from configs import mgtc_tiny
from mgtc import task as mgtc_task
from videolib import checkpoint
from videolib import train

# (row id, experiment, config arg): 16 frames at 2x cover the 8 frames' time span.
ROWS = (
    ("a8", "a, b, d", "frames=8"),
    ("a16", "a, b", "frames=16"),
    ("mgtc25", "b, c", "frames=16,method=mgtc,ratio=0.25"),
    ("mgtc50", "b, c, d", "frames=16,method=mgtc,ratio=0.5"),
    ("random25", "c", "frames=16,method=random,ratio=0.25"),
    ("random50", "c", "frames=16,method=random,ratio=0.5"),
    ("tube25", "c", "frames=16,method=tube,ratio=0.25"),
    ("tube50", "c", "frames=16,method=tube,ratio=0.5"),
    ("cell25", "c", "frames=16,method=running_cell,ratio=0.25"),
    ("cell50", "c", "frames=16,method=running_cell,ratio=0.5"),
)

_ROOT = flags.DEFINE_string("root", "/tmp/mgtc_exp/runs", "One workdir per row below.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (None = TFDS default).")
_ROWS = flags.DEFINE_list("rows", [], "Row ids to run; empty = all.")
_SEEDS = flags.DEFINE_list("seeds", [], "config.seed values, one run per row each; empty = "
                           "the config's seed, workdirs directly under --root.")
_STEPS = flags.DEFINE_integer("steps", 1800, "Fine-tuning steps per row (the config default).")
_PRETRAIN_STEPS = flags.DEFINE_integer(
    "pretrain_steps", 0, "VideoMAE pretraining steps shared by every row; 0 = from scratch.")
_THROUGHPUT_BATCH = flags.DEFINE_integer("throughput_batch", 64, "Clips per timed call.")
_THROUGHPUT_SECONDS = flags.DEFINE_float("throughput_seconds", 5.0, "Timing per row.")


def _config(arg: str, *, steps: int, init_from: str = "", seed: int | None = None):
  config = mgtc_tiny.get_config(arg)
  if seed is not None:
    config.seed = seed
  config.data.data_dir = _DATA_DIR.value
  config.num_train_steps = steps
  config.eval_every_steps = steps
  config.checkpoint_every_steps = steps
  config.init_from = init_from
  return config


def _command(arg: str, workdir: str, steps: int, init_from: str, seed: int | None = None
             ) -> str:
  command = (f"python -m mgtc.main --config=configs/mgtc_tiny.py:{arg} --workdir={workdir} "
             f"--config.num_train_steps={steps} --config.eval_every_steps={steps}")
  if seed is not None:
    command += f" --config.seed={seed}"
  if _DATA_DIR.value:
    command += f" --config.data.data_dir={_DATA_DIR.value}"
  if init_from:
    command += f" --config.init_from={init_from}"
  return command


def _final_eval(workdir: str, steps: int) -> dict | None:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    records = [json.loads(line) for line in f]
  finals = [r for r in records if r["split"] == "validation" and r["step"] == steps]
  return finals[-1] if finals else None


def _train(config, workdir: str) -> dict:
  """Trains unless `workdir` already holds the final eval; returns that eval record."""
  record = _final_eval(workdir, config.num_train_steps)
  if record is None:
    train.train_and_evaluate(config, workdir, mgtc_task.make_task(config))
    record = _final_eval(workdir, config.num_train_steps)
  return record


def _clips_per_second(config, workdir: str) -> float:
  """Eval-forward throughput of the trained model, selection included."""
  task = mgtc_task.make_task(config)
  batch = _THROUGHPUT_BATCH.value
  model = config.model
  video = jax.random.uniform(
      jax.random.key(0),
      (batch, model.num_frames, model.image_size, model.image_size, model.channels))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      jax.eval_shape(task.init, jax.random.key(0), {"video": video}))
  params = checkpoint.load_params(workdir, abstract, config)
  forward = jax.jit(lambda p, v: task.logits(p, v, train=False))
  forward(params, video).block_until_ready()  # Compile.
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < _THROUGHPUT_SECONDS.value or calls < 3:
    forward(params, video).block_until_ready()
    calls += 1
  return calls * batch / (time.perf_counter() - start)


def main(argv):
  del argv
  root = _ROOT.value
  init_from = ""
  if _PRETRAIN_STEPS.value:
    init_from = os.path.join(root, "pretrain")
    pretrain = _config("stage=pretrain", steps=_PRETRAIN_STEPS.value)
    print("pretrain:", _command("stage=pretrain", init_from, _PRETRAIN_STEPS.value, ""))
    _train(pretrain, init_from)
  selected = [row for row in ROWS if not _ROWS.value or row[0] in _ROWS.value]
  seeds = [int(seed) for seed in _SEEDS.value] or [None]
  results = []
  for seed in seeds:
    for row_id, experiment, arg in selected:
      workdir = os.path.join(root, "" if seed is None else f"seed{seed}", row_id)
      config = _config(arg, steps=_STEPS.value, init_from=init_from, seed=seed)
      start = time.perf_counter()
      record = _train(config, workdir)
      train_seconds = time.perf_counter() - start
      clips_per_second = (_clips_per_second(config, workdir)
                          if _THROUGHPUT_SECONDS.value > 0 else float("nan"))
      results.append(dict(
          row=row_id, seed=config.seed, experiment=experiment, arg=arg,
          top_1=record["top_1"], gflops_per_view=record["gflops_per_view"],
          clips_per_second=clips_per_second, wall_seconds=train_seconds,
          command=_command(arg, workdir, _STEPS.value, init_from, seed)))
      logging.info("Row %s: %s", row_id, results[-1])
  with open(os.path.join(root, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  print("| row | exp | config arg | seeds | top-1 % (mean ± std) | GFLOPs/view | clips/s |")
  print("|---|---|---|---|---|---|---|")
  for row_id, experiment, arg in selected:
    runs = [r for r in results if r["row"] == row_id]
    top_1 = 100 * np.array([r["top_1"] for r in runs])
    spread = f" ± {np.std(top_1, ddof=1):.1f}" if len(runs) > 1 else ""
    clips_per_second = np.mean([r["clips_per_second"] for r in runs])
    speed = "–" if np.isnan(clips_per_second) else f"{clips_per_second:.0f}"
    print(f"| {row_id} | {experiment} | `{arg}` | {len(runs)} | {top_1.mean():.1f}{spread} | "
          f"{runs[0]['gflops_per_view']:.4f} | {speed} |")
  for r in results:
    print(f"{r['row']} (seed {r['seed']}): {r['command']}")
  print("load average:", os.getloadavg(), "devices:", jax.devices())


if __name__ == "__main__":
  app.run(main)
