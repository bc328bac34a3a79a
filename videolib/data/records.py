"""Exported records: a dataset's checked video records in one `.npz`, read without TensorFlow.

Accelerator images often ship jax without TensorFlow, and TFDS needs TensorFlow to open a
stored dataset (its Video feature), though not to import. Where TFDS works,
`python -m videolib.data.export_records` writes the train and eval splits of a config's
dataset to one file; anywhere, `--config.data.records=FILE` makes the pipeline read both
splits from it instead of TFDS. Records cut the pipeline where stored records come out of
the dataset, so windows, crops, shuffling, the resumable iterator state and the batches are
the pipeline's own (tests/test_data_records.py checks the batches are identical).

Video only (each frame's PNG bytes, as stored): pretraining configs
(`data.features=("video",)`). Layout, per role in ('train', 'eval'): `<role>_split` (the
split name), `<role>_shape` ([videos, frames]), `<role>_bytes` (all frames' PNG bytes
concatenated, uint8) and `<role>_offsets` (frame f of video v is
bytes[offsets[v*T+f]:offsets[v*T+f+1]]), plus `name` (the dataset).
"""
import os
import zipfile
import zlib
from typing import Any, Mapping, Sequence

import grain
import numpy as np

ROLES = ("train", "eval")


def check_video_only(data_config) -> None:
  if tuple(data_config.features) != ("video",):
    raise ValueError(
        f"config.data.features={tuple(data_config.features)}: records files hold video "
        "only; use a pretraining config (features=('video',)) or read the dataset with TFDS.")


def write(path: str, name: str, splits: Mapping[str, tuple[str, Sequence[list[bytes]]]]
          ) -> None:
  """Writes `splits` ({role: (split name, videos as lists of frame PNG bytes)}) to `path`."""
  arrays = {"name": np.array(name)}
  for role, (split, videos) in splits.items():
    lengths = {len(video) for video in videos}
    if len(lengths) != 1:
      raise ValueError(f"{name} {split}: videos have {sorted(lengths)} frames; records "
                       "files hold videos of one length.")
    frames = [frame for video in videos for frame in video]
    arrays[f"{role}_split"] = np.array(split)
    arrays[f"{role}_bytes"] = np.frombuffer(b"".join(frames), np.uint8)
    arrays[f"{role}_offsets"] = np.cumsum([0] + [len(frame) for frame in frames])
    arrays[f"{role}_shape"] = np.array([len(videos), lengths.pop()])
  tmp_path = f"{path}.tmp.npz"  # np.savez appends '.npz' to names without it.
  np.savez(tmp_path, **arrays)
  os.replace(tmp_path, path)  # A killed export leaves no half-written file under `path`.


class RecordSource(grain.sources.RandomAccessDataSource):
  """One split of a records file, held in memory, in the pipeline's checked-record layout."""

  def __init__(self, split: str, num_frames: int, frames: list[bytes]):
    self._split = split
    self._num_frames = num_frames
    self._frames = frames

  def __len__(self) -> int:
    return len(self._frames) // self._num_frames

  def __getitem__(self, index: int) -> dict[str, Any]:
    t, index = self._num_frames, int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"{self._split}[{index}]: the records hold {len(self)} videos.")
    return {"video": self._frames[index * t:(index + 1) * t], "video_name": None,
            "split": self._split, "index": index}


def read(path: str, name: str, split: str) -> RecordSource:
  """`split` of the records file at `path`, checked against the dataset `name`.

  Only that split's arrays are loaded (an evaluation reopens its split every time).
  """
  where = f"config.data.records={path!r}"
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{where}: no such file. Write it where TFDS works with `python -m "
        "videolib.data.export_records --config=CONFIG --out=FILE`, or unset the field to "
        "read the dataset with TFDS.")
  required = {"name", *(f"{role}_{key}" for role in ROLES
                        for key in ("split", "shape", "bytes", "offsets"))}
  try:
    with np.load(path) as data:
      missing = required - set(data.files)
      if not missing:
        stored_name = str(data["name"])
        roles = {str(data[f"{role}_split"]): role for role in ROLES}
        if stored_name == name and split in roles:
          role = roles[split]
          content, offsets = data[f"{role}_bytes"].tobytes(), data[f"{role}_offsets"]
          num_videos, num_frames = (int(v) for v in data[f"{role}_shape"])
  except (zipfile.BadZipFile, zlib.error, TypeError, ValueError, OSError,
          EOFError) as error:  # TypeError: a plain .npy array is no context manager.
    raise ValueError(f"{where} is not a readable records file ({type(error).__name__}: "
                     f"{error}); export it again.") from error
  if missing:
    raise ValueError(f"{where} lacks {sorted(missing)}: not a records file; export it again.")
  if stored_name != name:
    raise ValueError(f"{where} holds {stored_name!r}, but config.data.name is {name!r}: "
                     "export the config's dataset.")
  if split not in roles:
    raise ValueError(f"Split {split!r} not in {where} (has {sorted(roles)}).")
  if (len(offsets) != num_videos * num_frames + 1 or offsets[-1] != len(content)
      or np.any(np.diff(offsets) <= 0)):
    raise ValueError(f"{where}: the offsets of split {split!r} do not fit its "
                     f"{num_videos} x {num_frames} frames in {len(content)} bytes; the "
                     "file is corrupt: export it again.")
  frames = [content[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
  return RecordSource(split, num_frames, frames)
