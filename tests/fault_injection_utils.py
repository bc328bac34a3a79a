r"""Real training runs to break, for `tests/test_fault_injection.py`.

This file is also the runs' config file:

  python -m moog.main --config=tests/fault_injection_utils.py:<tfds data_dir> --workdir=DIR

is the tiny MooG model (`moog.model.tiny_model_config()`) on 16x16 frames, 4-frame windows,
batch 8, logging every step, on the synthetic dataset `DATASET` stored under <data_dir>.

Runs are subprocesses with 8 simulated CPU devices (as in `conftest.py`), so losses are
bitwise comparable between runs. Compiled programs go to a persistent JAX compilation
cache (`COMPILATION_CACHE`): compiling the train step takes ~35 s on a loaded 2-core
machine, loading it ~1 s, and the same executable gives the same bits.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import ml_collections
import numpy as np
from PIL import Image

from configs import moog_tiny
from moog import model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "synthetic_movi/16x16_8f_train32_val16"
COMPILATION_CACHE = os.path.join(tempfile.gettempdir(), "videolib_fault_injection_jax_cache")
# Fields compared between runs: everything the step computes (not the timings).
COMPARED_METRICS = ("loss", "psnr", "grad_norm", "param_norm", "learning_rate")


def get_config(data_dir: str | None = None) -> ml_collections.ConfigDict:
  """Tiny MooG on 16x16 synthetic video; `data_dir` is the TFDS directory."""
  config = moog_tiny.get_config()
  config.model = model.tiny_model_config()
  config.data.name = DATASET
  config.data.data_dir = data_dir or None
  config.data.resolution = 16
  config.data.num_frames = 4
  config.data.num_eval_examples = 16
  config.num_train_steps = 12
  config.log_every_steps = 1
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 4
  config.checkpoint_max_to_keep = 3
  config.checkpoint_async = True  # The suite kills runs during async saves too.
  config.num_summary_videos = 1
  config.optimizer.warmup_steps = 2
  return config


def prepare_dataset(data_dir: str) -> None:
  """Renders `DATASET` into `data_dir` (a few seconds), as the runs would on first use."""
  from videolib.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.make_eval_iterator(get_config(data_dir).data, global_batch_size=8,
                              process_index=0, process_count=1)


def _environment() -> dict[str, str]:
  """8 CPU devices; the suite's compilation cache (conftest.py) if set, else our own."""
  env = dict(os.environ)
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=8", CUDA_VISIBLE_DEVICES="",
             TF_CPP_MIN_LOG_LEVEL="2")
  env.setdefault("JAX_COMPILATION_CACHE_DIR", COMPILATION_CACHE)
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  return env


class Run:
  """One `python -m moog.main` training process; its log goes to `<workdir>.<n>.log`."""

  def __init__(self, workdir: str, data_dir: str, *overrides: str):
    self.workdir = workdir
    index = 0
    while os.path.exists(f"{workdir}.{index}.log"):
      index += 1
    self.log_path = f"{workdir}.{index}.log"
    command = [sys.executable, "-m", "moog.main",
               f"--config={os.path.abspath(__file__)}:{data_dir}", f"--workdir={workdir}",
               "--verbosity=-1", *overrides]  # Warnings and errors only.
    with open(self.log_path, "w") as log:
      self.process = subprocess.Popen(command, cwd=REPO, env=_environment(), stdout=log,
                                      stderr=subprocess.STDOUT)

  def wait(self, timeout: float = 600) -> int:
    """Waits for the process to end; returns its exit code (-N: killed by signal N)."""
    return self.process.wait(timeout=timeout)

  def log(self) -> str:
    with open(self.log_path) as f:
      return f.read()

  def signal(self, signum: int) -> None:
    self.process.send_signal(signum)

  def wait_for_path(self, path: str, timeout: float = 600) -> None:
    """Waits (polling every millisecond) until `path` exists, e.g. a save's tmp directory."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
      if self.process.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError(f"No {path} (exit {self.process.returncode}):\n"
                           f"{self.log()[-3000:]}")
      time.sleep(0.001)

  def wait_for_step(self, step: int, timeout: float = 600) -> int:
    """Waits until the run has logged train step >= `step`; returns the logged step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      logged = last_train_step(self.workdir)
      if logged is not None and logged >= step:
        return logged
      if self.process.poll() is not None:
        raise RuntimeError(f"Run ended (exit {self.process.returncode}) before step {step}:"
                           f"\n{self.log()[-3000:]}")
      time.sleep(0.02)
    raise TimeoutError(f"No step {step} after {timeout} s:\n{self.log()[-3000:]}")


def run_to_end(workdir: str, data_dir: str, *overrides: str, timeout: float = 600) -> Run:
  """Starts a run and waits for it to end."""
  run = Run(workdir, data_dir, *overrides)
  run.wait(timeout)
  return run


def records(workdir: str, split: str = "train") -> list[dict]:
  """The `metrics.jsonl` records of `split`, in file order (lines cut short are skipped)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  result = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if record["split"] == split:
        result.append(record)
  return result


def last_train_step(workdir: str) -> int | None:
  steps = [record["step"] for record in records(workdir)]
  return max(steps) if steps else None


def compared(workdir: str) -> dict[int, tuple[float, ...]]:
  """{step: the compared metrics} of the train records; fails on a step logged twice."""
  by_step = {}
  for record in records(workdir):
    assert record["step"] not in by_step, f"step {record['step']} logged twice in {workdir}"
    by_step[record["step"]] = tuple(record[name] for name in COMPARED_METRICS)
  return by_step


def checkpoint_steps(workdir: str) -> list[int]:
  """Complete checkpoints on disk (orbax's view: tmp directories do not count)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def copy_workdir(source: str, destination: str) -> str:
  shutil.copytree(source, destination)
  return destination


def truncate_files(directory: str, size: int = 3) -> int:
  """Truncates every file under `directory` to `size` bytes (a save cut short)."""
  count = 0
  for root, _, files in os.walk(directory):
    for name in files:
      os.truncate(os.path.join(root, name), size)
      count += 1
  return count


def overwrite_with_noise(directory: str, seed: int = 0) -> int:
  """Overwrites every array data file under `directory` with random bytes (bit rot)."""
  rng = np.random.default_rng(seed)
  count = 0
  for root, _, files in os.walk(directory):
    if os.path.basename(root) != "d":  # OCDBT data files live in `.../d/`.
      continue
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.write(rng.integers(0, 256, os.path.getsize(path), np.uint8).tobytes())
      count += 1
  return count


def kill(run: Run, signum: int = signal.SIGKILL) -> int:
  run.signal(signum)
  return run.wait()


# ---- Bad records in a local TFDS dataset ---------------------------------------------------


def _shard(data_dir: str, split: str) -> str:
  directory = os.path.join(data_dir, *DATASET.split("/"), "1.0.0")
  (name,) = [n for n in os.listdir(directory) if f"-{split}.array_record" in n]
  return os.path.join(directory, name)


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _break_example(example, how: str) -> None:
  """Edits a parsed `tf.train.Example` in place the way `how` names."""
  features = example.features.feature
  if how == "video_wrong_shape":  # 8x8 frames in a 16x16 dataset.
    frames = [_png(np.zeros((8, 8, 3), np.uint8))] * len(features["video"].bytes_list.value)
    del features["video"].bytes_list.value[:]
    features["video"].bytes_list.value.extend(frames)
  elif how == "depth_wrong_dtype":  # 8-bit depth PNGs where MOVi stores uint16.
    frames = [_png(np.zeros((16, 16), np.uint8))] * len(features["depth"].bytes_list.value)
    del features["depth"].bytes_list.value[:]
    features["depth"].bytes_list.value.extend(frames)
  elif how == "video_corrupt_png":  # A frame whose bytes are not an image.
    features["video"].bytes_list.value[1] = b"\x89PNG garbage"
  elif how == "nan_depth_range":
    features["metadata/depth_range"].float_list.value[1] = float("nan")
  else:
    raise ValueError(f"Unknown breakage {how!r}.")


def write_bad_record(data_dir: str, split: str, index: int, how: str) -> str:
  """Replaces record `index` of `split` (file order, as the pipeline indexes it).

  Args:
    data_dir: TFDS directory holding `DATASET`.
    split: 'train' or 'validation'.
    index: record position in the split.
    how: 'video_wrong_shape', 'depth_wrong_dtype', 'video_corrupt_png',
      'nan_depth_range' (edit one field of a valid record) or 'garbage' (the record's
      bytes are not an Example at all).

  Returns:
    The record's `metadata/video_name`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  path = _shard(data_dir, split)
  reader = array_record_module.ArrayRecordReader(path)
  serialized = list(reader.read(range(reader.num_records())))
  reader.close()
  example = tf.train.Example.FromString(serialized[index])
  video_name = example.features.feature["metadata/video_name"].bytes_list.value[0].decode()
  if how == "garbage":
    serialized[index] = b"\x00\xff not a tf.train.Example " * 4
  else:
    _break_example(example, how)
    serialized[index] = example.SerializeToString()
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  for record in serialized:
    writer.write(record)
  writer.close()
  return video_name
