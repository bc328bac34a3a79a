r"""Time to render and store a synthetic_movi config (default: the tiny configs' data).

  /work/venv/bin/python benchmarks/data_prepare.py --data_dir=/tmp/tfds_bench \
      --name=synthetic_movi/32x32_24f

Prepares into a fresh `data_dir` (delete it to measure again) and prints the
wall time and the split sizes. Numbers are in docs/data.md.
"""
import time

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from videolib.data import synthetic  # pylint: disable=unused-import  # Registers the builder.

_NAME = flags.DEFINE_string("name", "synthetic_movi/32x32_24f", "Dataset/config.")
_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/tfds_bench", "Fresh TFDS data dir.")


def main(argv):
  del argv
  builder = tfds.builder(_NAME.value, data_dir=_DATA_DIR.value, file_format="array_record")
  if builder.is_prepared():
    raise app.UsageError(f"{_NAME.value} already prepared under {_DATA_DIR.value}; "
                         "use a fresh --data_dir.")
  start = time.perf_counter()
  builder.download_and_prepare()
  seconds = time.perf_counter() - start
  sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
  print(f"{_NAME.value}: prepared {sizes} in {seconds:.1f} s "
        f"({sum(sizes.values()) / seconds:.1f} videos/s), "
        f"{builder.info.dataset_size} on disk")


if __name__ == "__main__":
  app.run(main)
