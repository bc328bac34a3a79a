r"""Trains with the real trainer on dataset records exported to one file (no TensorFlow).

Accelerator images often have jax but not TensorFlow, and TFDS needs TensorFlow to open
a stored dataset (its Video feature). This script cuts the input pipeline where the
stored records come out of the dataset: where TFDS works, `--export` writes the checked
records of the config's train and eval splits (each frame's PNG bytes, as stored) to one
file; elsewhere, training swaps only the pipeline's source opener for one over those
records. Windows, crops, shuffling, the resumable iterator state, checkpoints, metrics
and evaluation are the trainer's own, so a run here logs what `moog.main` would log.
Video-only data (`data.features=("video",)`, the pretraining configs).

  # where TFDS can read the data (writes 45 MB for the tiny configs' synthetic data):
  python benchmarks/train_from_records.py --config=configs/moog_tiny.py \
      --records=/tmp/synthetic_32x32_24f.npz --export
  # anywhere jax, grain and PIL import:
  python benchmarks/train_from_records.py --config=configs/moog_tiny.py \
      --records=/tmp/synthetic_32x32_24f.npz --workdir=DIR [--config.field=value ...]
"""
import os

from absl import app
from absl import flags
from absl import logging
import grain
import numpy as np

from videolib import train
from videolib.data import pipeline


def _check_video_only(data_config) -> None:
  if tuple(data_config.features) != ("video",):
    raise ValueError(f"data.features={tuple(data_config.features)}: exported records hold "
                     "video only; use a pretraining config (features=('video',)).")


def export_records(data_config, path: str) -> None:
  """Writes the checked records of the train and eval splits: PNG bytes per frame."""
  _check_video_only(data_config)
  arrays = {"name": np.array(data_config.name)}
  for role, split in (("train", data_config.train_split), ("eval", data_config.eval_split)):
    source, _ = pipeline._open_source(data_config, split)  # pylint: disable=protected-access
    videos = [source[i]["video"] for i in range(len(source))]  # Lists of PNG bytes.
    lengths = {len(video) for video in videos}
    if len(lengths) != 1:
      raise ValueError(f"{split}: videos have {sorted(lengths)} frames; records files "
                       "hold fixed-length videos.")
    frames = [frame for video in videos for frame in video]
    arrays[f"{role}_split"] = np.array(split)
    arrays[f"{role}_bytes"] = np.frombuffer(b"".join(frames), np.uint8)
    arrays[f"{role}_offsets"] = np.cumsum([0] + [len(frame) for frame in frames])
    arrays[f"{role}_shape"] = np.array([len(videos), lengths.pop()])
  np.savez(path, **arrays)
  logging.info("Wrote %s (%.1f MB).", path, os.path.getsize(path) / 1e6)


class _RecordSource(grain.sources.RandomAccessDataSource):
  """Records in the layout of the pipeline's checked source, held in memory."""

  def __init__(self, data: np.lib.npyio.NpzFile, role: str):
    self._split = str(data[f"{role}_split"])
    self._num_videos, self._num_frames = (int(v) for v in data[f"{role}_shape"])
    content, offsets = data[f"{role}_bytes"].tobytes(), data[f"{role}_offsets"]
    self._frames = [content[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

  def __len__(self) -> int:
    return self._num_videos

  def __getitem__(self, index: int) -> dict:
    t, index = self._num_frames, int(index)
    return {"video": self._frames[index * t:(index + 1) * t], "video_name": None,
            "split": self._split, "index": index}


def use_records(data_config, path: str) -> None:
  """Makes the pipeline read `data_config`'s splits from the records file at `path`."""
  _check_video_only(data_config)
  with np.load(path) as data:
    if str(data["name"]) != data_config.name:
      raise ValueError(f"{path} holds {str(data['name'])!r}, the config reads "
                       f"{data_config.name!r}: export the config's dataset.")
    sources = {str(data[f"{role}_split"]): _RecordSource(data, role)
               for role in ("train", "eval")}

  def open_source(config, split):
    stored = pipeline.validate_config(config)
    if split not in sources:
      raise ValueError(f"Split {split!r} is not in {path} (has {sorted(sources)}).")
    return sources[split], stored

  pipeline._open_source = open_source  # pylint: disable=protected-access


def main(argv):
  del argv
  from moog import main as moog_main  # pylint: disable=g-import-not-at-top
  config, workdir, records = flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.records
  if flags.FLAGS.export:
    export_records(config.data, records)
    return
  if not workdir:
    raise app.UsageError("--workdir is required to train.")
  use_records(config.data, records)
  logging.info("Finished: %s", train.train_and_evaluate(config, workdir,
                                                         moog_main.make_task(config)))


if __name__ == "__main__":
  # Flags are defined only when this runs as a script: tests import the functions above
  # next to modules that define --config themselves (moog.visualize).
  import moog.main  # pylint: disable=g-import-not-at-top,unused-import  # --config, --workdir.
  flags.DEFINE_string("records", None, "The exported records file (.npz).")
  flags.DEFINE_bool("export", False, "Write --records from the config's dataset and exit "
                    "(needs TFDS with TensorFlow).")
  flags.mark_flags_as_required(["config", "records"])
  app.run(main)
