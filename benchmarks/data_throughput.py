r"""Input pipeline throughput (per-host batches per second) on synthetic_movi or MOVi.

  /work/venv/bin/python benchmarks/data_throughput.py --data_dir=/tmp/tfds_bench

MOVi-layout data without the real dataset: write the ray-traced stand-in with
`python -m videolib.data.write_movi_testing --data_dir=D --size=128` and pass
`--name=movi_e/128x128 --data_dir=D --resolution=128`.

Defaults are the tiny MooG setting: synthetic_movi/32x32_24f, 8-frame windows,
32x32, batch 8, video only, no crop. `--features` / `--random_crop` measure
heavier settings. The first batches (thread start-up) are not timed. Numbers
are in docs/data.md.
"""
import time

from absl import app
from absl import flags

from videolib.data import pipeline

_NAME = flags.DEFINE_string("name", "synthetic_movi/32x32_24f", "Dataset/config.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Global batch size.")
_FRAMES = flags.DEFINE_integer("num_frames", 8, "Window length.")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Output resolution.")
_FEATURES = flags.DEFINE_list("features", ["video"], "Batch features.")
_CROP = flags.DEFINE_bool("random_crop", False, "Random crops.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "grain reader threads.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "grain worker processes (0 = none).")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed batches.")
_BATCHES = flags.DEFINE_integer("batches", 200, "Timed batches.")


def main(argv):
  del argv
  config = pipeline.default_data_config()
  config.update(name=_NAME.value, data_dir=_DATA_DIR.value, num_frames=_FRAMES.value,
                resolution=_RESOLUTION.value, features=tuple(_FEATURES.value),
                random_crop=_CROP.value, num_threads=_THREADS.value,
                worker_count=_WORKERS.value)
  iterator = pipeline.make_train_iterator(config, global_batch_size=_BATCH.value, seed=0,
                                          process_index=0, process_count=1)
  for _ in range(_WARMUP.value):
    next(iterator)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(iterator)
  seconds = time.perf_counter() - start
  print(f"{config.name} batch={_BATCH.value} T={_FRAMES.value} res={_RESOLUTION.value} "
        f"features={config.features} random_crop={_CROP.value} "
        f"threads={_THREADS.value} workers={_WORKERS.value}: "
        f"{_BATCHES.value / seconds:.1f} batches/s "
        f"({_BATCHES.value * _BATCH.value / seconds:.0f} examples/s)")


if __name__ == "__main__":
  app.run(main)
