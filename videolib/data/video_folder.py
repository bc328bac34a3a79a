"""Action-recognition videos as researchers keep them: video files plus official split lists.

`config.data.name` names the dataset and split set; `config.data.data_dir` is a directory
that holds the video files (any folder structure below it: class folders, the archives'
own top folder, one flat folder per split) and the split lists (anywhere below it, found
by their official file names):

| name | split lists | labels |
|---|---|---|
| `videos/ucf101_<k>`, k = 1, 2, 3 | `classInd.txt`, `trainlist0<k>.txt`, `testlist0<k>.txt` (`ucfTrainTestlist/` of the official zip) | `classInd.txt` order, from 0 |
| `videos/hmdb51_<k>`, k = 1, 2, 3 | `<class>_test_split<k>.txt` per class (`testTrainMulti_7030_splits/`): 1 = train, 2 = test, 0 = unused | sorted class names |
| `videos/kinetics400` | `train.csv`, `validate.csv`, `test.csv` (columns `label, youtube_id, time_start, time_end, ...`); a video is `<youtube_id>_<start:06d>_<end:06d>.<ext>` | sorted names in `train.csv` |

Splits: 'train' and 'test' (UCF101, HMDB51); 'train', 'validation' and 'test' (Kinetics).
Videos are matched by file name, so the folder layout below `data_dir` does not matter;
two files with one name are an error. Listed videos that are absent (Kinetics loses
YouTube videos every year) are left out with a warning that counts them.

Decoding is PyAV's (FFmpeg). A video that cannot be opened or decoded is, in training,
skipped (the next video of the split takes its place) with a warning that counts the
skipped videos of this process; in evaluation it is an error naming the file. Frames past
a decoding error in the middle of a training video repeat the last good frame (warned).
"""
import collections
import csv
import dataclasses
import functools
import os
import re
import threading

import av
import grain
import numpy as np
from absl import logging

PREFIX = "videos/"
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov")
NUM_CLASSES = {"ucf101": 101, "hmdb51": 51, "kinetics400": 400}
_NAME = re.compile(r"^videos/(?:(ucf101|hmdb51)_([123])|(kinetics400))$")
_SPLITS = {"ucf101": ("train", "test"), "hmdb51": ("train", "test"),
           "kinetics400": ("train", "validation", "test")}
_KINETICS_FILES = {"train": "train.csv", "validation": "validate.csv", "test": "test.csv"}


class UnreadableVideoError(ValueError):
  """A video file that PyAV cannot open or decode."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One video of a split."""
  path: str
  label: int


def is_video_folder(name: str) -> bool:
  return name.startswith(PREFIX)


def parse_name(name: str) -> tuple[str, int | None]:
  """'videos/ucf101_1' -> ('ucf101', 1); 'videos/kinetics400' -> ('kinetics400', None)."""
  match = _NAME.match(name)
  if not match:
    raise ValueError(f"Unknown video-folder dataset {name!r}: expected 'videos/ucf101_<1|2|3>', "
                     "'videos/hmdb51_<1|2|3>' or 'videos/kinetics400'.")
  if match.group(3):
    return "kinetics400", None
  return match.group(1), int(match.group(2))


def num_classes(name: str) -> int:
  return NUM_CLASSES[parse_name(name)[0]]


def splits(name: str) -> tuple[str, ...]:
  return _SPLITS[parse_name(name)[0]]


# ---- Finding the files --------------------------------------------------------------------


@functools.cache
def _files_below(data_dir: str) -> dict[str, list[str]]:
  """File name -> every path below `data_dir` with that name (one walk per directory)."""
  found = collections.defaultdict(list)
  for root, _, names in os.walk(data_dir, followlinks=True):
    for file_name in names:
      found[file_name].append(os.path.join(root, file_name))
  return dict(found)


def _list_file(data_dir: str, file_name: str, layout: str) -> str:
  paths = _files_below(data_dir).get(file_name, [])
  if not paths:
    raise FileNotFoundError(
        f"config.data.data_dir={data_dir!r} holds no {file_name!r}. Put the {layout} split "
        "lists anywhere below it (videolib/data/video_folder.py lists the expected files).")
  if len(paths) > 1:
    raise ValueError(f"config.data.data_dir={data_dir!r} holds {file_name!r} more than once: "
                     f"{sorted(paths)}. Keep one copy.")
  return paths[0]


def _video_path(data_dir: str, file_name: str) -> str | None:
  paths = _files_below(data_dir).get(file_name, [])
  if len(paths) > 1:
    raise ValueError(f"Video {file_name!r} is under config.data.data_dir={data_dir!r} "
                     f"more than once: {sorted(paths)}. Keep one copy.")
  return paths[0] if paths else None


def _read_lines(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f if line.strip()]


def _ucf101_listing(data_dir: str, fold: int, split: str) -> list[tuple[str, int]]:
  classes = {}
  for line in _read_lines(_list_file(data_dir, "classInd.txt", "UCF101")):
    index, name = line.split()
    classes[name] = int(index) - 1
  list_name = f"{'trainlist' if split == 'train' else 'testlist'}0{fold}.txt"
  listing = []
  for line in _read_lines(_list_file(data_dir, list_name, "UCF101")):
    relative = line.split()[0]  # Train lists add a 1-based label; it matches classInd.
    class_name = relative.split("/")[0]
    if class_name not in classes:
      raise ValueError(f"{list_name}: {relative!r} is in class {class_name!r}, which "
                       "classInd.txt does not list.")
    listing.append((os.path.basename(relative), classes[class_name]))
  return listing


def _hmdb51_listing(data_dir: str, fold: int, split: str) -> list[tuple[str, int]]:
  suffix = f"_test_split{fold}.txt"
  list_files = sorted(name for name in _files_below(data_dir) if name.endswith(suffix))
  if not list_files:
    raise FileNotFoundError(
        f"config.data.data_dir={data_dir!r} holds no '<class>{suffix}' files. Put HMDB51's "
        "testTrainMulti_7030_splits/ anywhere below it.")
  wanted = "1" if split == "train" else "2"
  listing = []
  for label, list_name in enumerate(list_files):
    for line in _read_lines(_list_file(data_dir, list_name, "HMDB51")):
      file_name, role = line.split()
      if role == wanted:
        listing.append((file_name, label))
  return listing


def _kinetics_listing(data_dir: str, split: str) -> list[tuple[str, int]]:
  def rows(split_name):
    with open(_list_file(data_dir, _KINETICS_FILES[split_name], "Kinetics-400"),
              encoding="utf-8") as f:
      return list(csv.DictReader(f))

  classes = {name: index for index, name in
             enumerate(sorted({row["label"] for row in rows("train")}))}
  listing = []
  for row in rows(split):
    stem = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
    label = classes.get(row.get("label", ""), -1)  # The test list has no labels.
    listing.append((stem, label))
  return listing


def _kinetics_file(data_dir: str, stem: str) -> str | None:
  for extension in VIDEO_EXTENSIONS:
    path = _video_path(data_dir, stem + extension)
    if path:
      return path
  return None


@functools.cache
def entries(name: str, data_dir: str, split: str) -> tuple[Entry, ...]:
  """The videos of `split` found below `data_dir`, in split-list order."""
  dataset, fold = parse_name(name)
  if split not in _SPLITS[dataset]:
    raise ValueError(f"Split {split!r} not in {name} (has {_SPLITS[dataset]}).")
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"config.data.data_dir={data_dir!r} is not a directory; point "
                            f"it at the folder holding the {dataset} videos and split lists.")
  if dataset == "ucf101":
    listing = _ucf101_listing(data_dir, fold, split)
    find = _video_path
  elif dataset == "hmdb51":
    listing = _hmdb51_listing(data_dir, fold, split)
    find = _video_path
  else:
    listing = _kinetics_listing(data_dir, split)
    find = _kinetics_file
  found, missing = [], []
  for file_name, label in listing:
    path = find(data_dir, file_name)
    if path is None:
      missing.append(file_name)
    else:
      found.append(Entry(path, label))
  if not found:
    raise FileNotFoundError(
        f"None of the {len(listing)} videos of {name} split {split!r} is below "
        f"config.data.data_dir={data_dir!r} (first listed: {listing[:1]}).")
  if missing:
    logging.warning("%s split %r: %d of %d listed videos are not below %s and are left out "
                    "(first: %s).", name, split, len(missing), len(listing), data_dir,
                    missing[:3])
  return tuple(found)


# ---- Decoding -------------------------------------------------------------------------------


_skipped_lock = threading.Lock()
_skipped = collections.Counter()


def note_skipped(path: str, error: Exception) -> None:
  """Counts and logs a training video that was skipped."""
  with _skipped_lock:
    _skipped[path] += 1
    count = sum(_skipped.values())
  logging.warning("Skipped unreadable video %s (%s); %d skipped so far in this process.",
                  path, error, count)


def skipped_count() -> int:
  """Training videos skipped so far by this process."""
  with _skipped_lock:
    return sum(_skipped.values())


def frame_count(path: str) -> int:
  """Frames of the video's first video stream (decoded to count where the header omits it).

  Raises:
    UnreadableVideoError: the file cannot be opened, holds no video stream, or its first
      frame does not decode.
  """
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise UnreadableVideoError(f"{path} has no video stream.")
      stream = container.streams.video[0]
      count = stream.frames
      frames = container.decode(stream)
      next(frames)  # The first frame must decode.
      if count <= 0:
        count = 1 + sum(1 for _ in frames)
      return count
  except UnreadableVideoError:
    raise
  except (av.FFmpegError, StopIteration, OSError) as error:
    raise UnreadableVideoError(f"{path} cannot be decoded ({type(error).__name__}: "
                               f"{error}).") from error


def decode_frames(path: str, indices: np.ndarray, *, strict: bool) -> np.ndarray:
  """uint8 [len(indices), H, W, 3] RGB frames at `indices` (any order, repeats allowed).

  Decodes from the start to the largest index. Past the stream's end (a header that
  overstates the count) or a decoding error, the last decoded frame repeats: with a
  warning when `strict` is False (training), else UnreadableVideoError.
  """
  wanted = set(int(i) for i in indices)
  last_wanted = max(wanted)
  decoded: dict[int, np.ndarray] = {}
  last = None
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      for index, frame in enumerate(container.decode(stream)):
        if index in wanted:
          last = frame.to_ndarray(format="rgb24")
          decoded[index] = last
        if index >= last_wanted:
          break
  except (av.FFmpegError, OSError, IndexError) as error:
    if strict or last is None:
      raise UnreadableVideoError(f"{path} cannot be decoded ({type(error).__name__}: "
                                 f"{error}).") from error
    logging.warning("%s: decoding stopped early (%s); its last good frame repeats.", path,
                    error)
  if last is None:
    raise UnreadableVideoError(f"{path}: none of frames {sorted(wanted)[:4]} decoded.")
  if len(decoded) < len(wanted):
    message = (f"{path} ended after frame {max(decoded)}; frames up to {last_wanted} were "
               "expected")
    if strict:
      raise UnreadableVideoError(message + ".")
    logging.warning("%s; its last good frame repeats.", message)
  previous = None
  for index in sorted(wanted):
    previous = decoded.setdefault(index, previous if previous is not None else last)
  return np.stack([decoded[int(i)] for i in indices])


# ---- Sampling -------------------------------------------------------------------------------


def clip_starts(num_video_frames: int, span: int, num_clips: int) -> np.ndarray:
  """Start frames of `num_clips` evenly spaced windows of `span` frames (0 if shorter)."""
  free = max(num_video_frames - span, 0)
  return np.linspace(0, free, num_clips).round().astype(int)


def spatial_crops(height: int, width: int, num_crops: int) -> list[tuple[int, int, int, int]]:
  """`num_crops` short-side squares (y0, x0, side, side) spread along the long side.

  One crop is the centred square; three are VideoMAE's test crops (start, centre, end).
  """
  side = min(height, width)
  offsets = np.linspace(0, max(height, width) - side, num_crops).round().astype(int)
  if num_crops == 1:
    offsets = np.array([(max(height, width) - side) // 2])
  if height >= width:
    return [(int(o), 0, side, side) for o in offsets]
  return [(0, int(o), side, side) for o in offsets]


# ---- The data source --------------------------------------------------------------------


class Source(grain.sources.RandomAccessDataSource):
  """The videos of one split as records `{'path', 'label', 'num_video_frames', ...}`.

  Each video is probed once per process (opened, frame count read, first frame decoded;
  the outcome is kept). In training an unreadable video is replaced by the next readable
  one of the split (`note_skipped` counts and logs it); in evaluation it raises
  UnreadableVideoError naming the file.
  """

  def __init__(self, name: str, data_dir: str, split: str, *, training: bool):
    self._entries = entries(name, os.path.abspath(data_dir), split)
    self._split = split
    self._training = training
    self._probed: dict[int, int | UnreadableVideoError] = {}

  def _frame_count(self, position: int) -> int:
    """The video's frame count; raises its UnreadableVideoError (also on later calls)."""
    if position not in self._probed:
      try:
        self._probed[position] = frame_count(self._entries[position].path)
      except UnreadableVideoError as error:
        self._probed[position] = error
        if self._training:
          note_skipped(self._entries[position].path, error)
    outcome = self._probed[position]
    if isinstance(outcome, UnreadableVideoError):
      raise outcome
    return outcome

  def __len__(self) -> int:
    return len(self._entries)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    for attempt in range(len(self._entries)):
      position = (index + attempt) % len(self._entries)
      entry = self._entries[position]
      try:
        count = self._frame_count(position)
      except UnreadableVideoError as error:
        if not self._training:
          raise UnreadableVideoError(
              f"Eval video {self._split}[{position}]: {error} Re-encode or remove it (and its "
              "split-list line) to evaluate.") from error
        continue
      return {"path": entry.path, "label": entry.label, "num_video_frames": count,
              "video_name": os.path.basename(entry.path), "split": self._split,
              "index": position}
    raise UnreadableVideoError(f"No video of split {self._split!r} can be decoded.")
