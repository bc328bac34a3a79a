r"""This project's MooG train step beside the official implementation's, in one sitting.

Alternates, for each of the official release's two timing models (tiny and paper, see
`configs/moog_official_speed.py`), the official code run by its harness (a separate
environment with kauldron; how to set it up: the harness's README) and this project's
`benchmarks/moog_train_speed.py`, so both see the same machine load. With
`--xla_defaults_too` each side also runs once more the other way round: the official code
with this project's XLA option (`train.compiler_options`, passed as XLA_FLAGS) and this
project with XLA's defaults, which separates what the option gives from what the code
gives. Prints a markdown table (median step and forward seconds, ratio official / ours)
and writes every raw JSON record to `--out` (`--table_only` prints the table again).

  OFFICIAL_MOOG_SRC=/tmp/official python benchmarks/moog_vs_official.py \
      --official_python=/tmp/official/venv/bin/python \
      --official_bench=PATH/bench_official.py --out=runs/moog_vs_official.jsonl

Run it on an otherwise idle machine: absolute times on shared machines move by tens of
percent within an hour; the ratio of two runs taken minutes apart much less.
"""

import functools
import json
import os
import subprocess
import sys

from absl import app
from absl import flags

from videolib import train

FLAGS = flags.FLAGS

_OFFICIAL_NAMES = {"tiny": "tiny", "paper": "paper_movi"}
_DEFAULT_STEPS = {"tiny": 10, "paper": 3}


def _xla_flags(options: dict[str, str] | None) -> str:
  return " ".join(f"--{name}={value}" for name, value in (options or {}).items())


def run_official(name: str, steps: int, with_project_options: bool) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=_xla_flags(train.compiler_options()) if with_project_options else "")
  command = [FLAGS.official_python, FLAGS.official_bench, "--config", _OFFICIAL_NAMES[name],
             "--steps", str(steps), "--warmup", "1", "--fwd-steps", str(steps)]
  output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  record = json.loads(output.strip().splitlines()[-1])
  return dict(side="official", config=name, project_xla_options=with_project_options,
              train_step_seconds=record["train_step_median_s"],
              forward_seconds=record["fwd_median_s"], params=record["params_total"],
              train_step_flops=record["train_flops_per_step"], raw=record)


def run_ours(name: str, steps: int, xla_defaults: bool) -> dict:
  command = [sys.executable, os.path.join(os.path.dirname(__file__), "moog_train_speed.py"),
             f"--config=configs/moog_official_speed.py:{name}", f"--steps={steps}",
             "--pipeline_batches=0", "--forward", f"--xla_defaults={xla_defaults}"]
  output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  record = json.loads(output)
  return dict(side="ours", config=name, project_xla_options=not xla_defaults,
              train_step_seconds=record["train_step_seconds"],
              forward_seconds=record["forward_seconds"], params=record["params"],
              train_step_flops=record["train_step_flops"], raw=record)


def table(records: list[dict], configs=("tiny", "paper")) -> str:
  """Markdown rows per config: each side as it ships (the official code with XLA's
  defaults, this project with its options), then both with the same XLA options."""
  lines = ["| config | official: XLA options | ours: XLA options | official step s "
           "| ours step s | step: official / ours | official fwd s | ours fwd s "
           "| fwd: official / ours |",
           "|---|---|---|---|---|---|---|---|---|"]
  by_key = {(r["config"], r["side"], r["project_xla_options"]): r for r in records}
  label = {True: "project's (no YNN fusions)", False: "XLA defaults"}
  for name in configs:
    for official_options, our_options in ((False, True), (True, True), (False, False)):
      official = by_key.get((name, "official", official_options))
      ours = by_key.get((name, "ours", our_options))
      if official is None or ours is None:
        continue
      lines.append(
          f"| {name} | {label[official_options]} | {label[our_options]} | "
          f"{official['train_step_seconds']:.2f} | {ours['train_step_seconds']:.2f} | "
          f"{official['train_step_seconds'] / ours['train_step_seconds']:.2f}x | "
          f"{official['forward_seconds']:.2f} | {ours['forward_seconds']:.2f} | "
          f"{official['forward_seconds'] / ours['forward_seconds']:.2f}x |")
  return "\n".join(lines)


def _read(path: str) -> list[dict]:
  with open(path) as records:
    return [json.loads(line) for line in records if line.strip()]


def main(argv):
  del argv
  if FLAGS.table_only:
    print(table(_read(FLAGS.out), FLAGS.configs))
    return
  if not (FLAGS.official_python and FLAGS.official_bench and os.environ.get("OFFICIAL_MOOG_SRC")):
    raise app.UsageError("Set --official_python, --official_bench and OFFICIAL_MOOG_SRC (the "
                         "harness's README says how to get the official code and its env).")
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  records = []
  for name in FLAGS.configs:
    steps = FLAGS.steps or _DEFAULT_STEPS[name]
    # Each side with the XLA options it ships with, then (swapped) with the other's.
    swaps = (False, True) if FLAGS.xla_defaults_too else (False,)
    runs = [run for swapped in swaps for run in (
        functools.partial(run_official, name, steps, with_project_options=swapped),
        functools.partial(run_ours, name, steps, xla_defaults=swapped))]
    for run in runs:
      record = run()
      print(f"{record['side']:8s} {name:5s} project XLA options={record['project_xla_options']}:"
            f" step {record['train_step_seconds']:.2f} s, forward {record['forward_seconds']:.2f} s",
            flush=True)
      records.append(record)
      with open(FLAGS.out, "a") as out:
        out.write(json.dumps(record) + "\n")
  print(table(records, FLAGS.configs))


if __name__ == "__main__":
  # Defined only when this runs as a script, so tests can import the functions.
  flags.DEFINE_string("official_python", None, "Python of the official code's environment.")
  flags.DEFINE_string("official_bench", None, "Path of the official harness, bench_official.py.")
  flags.DEFINE_string("out", "runs/moog_vs_official.jsonl", "Raw records, one per run.")
  flags.DEFINE_list("configs", ["tiny", "paper"], "Timing models to compare.")
  flags.DEFINE_integer("steps", 0, "Timed steps per run (0: 10 tiny, 3 paper).")
  flags.DEFINE_bool("xla_defaults_too", False, "Also swap the XLA options between the sides.")
  flags.DEFINE_bool("table_only", False, "Print the table of the records in --out; run nothing.")
  app.run(main)
