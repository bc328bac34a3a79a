"""The input pipeline: grain over TFDS ArrayRecord data sources.

Design decision (not tf.data): the pipeline reads a TFDS dataset stored as
ArrayRecord through `builder.as_data_source(split)` and grain `MapDataset`s.

  * Random access makes the iterator exactly resumable: its state is a few
    integers (`get_state()`, saved with each checkpoint), and the order of
    examples and the per-example randomness (window, crop, track choice) are
    pure functions of (seed, position), so a restored run sees the same data.
  * Sharding across hosts is by index (host h of P reads examples h, h + P, ...),
    with explicit `process_index` / `process_count` arguments so tests can
    simulate hosts. No shuffle buffer in host RAM (a global index permutation,
    different every epoch).
  * It matches the official MooG pipeline, which reads MOVi from the ArrayRecord
    copy at gs://kubric-public/grain (see `movi.py` for copying and converting).

Datasets (`data_config.name`) come from the registry `DATASETS` at the end of this file:
one `DatasetAdapter` per family (what its name says about the stored videos, the features
and class count it has, where its records come from, how a record becomes an example);
the rest of this module is generic. The families:
  * 'synthetic_movi/<config>' (`synthetic.py`): rendered and stored on first use
    under `data_dir`; e.g. 'synthetic_movi/32x32_24f' for the tiny configs.
  * 'movi_a/128x128' ... 'movi_f/512x512' (`movi.py`): read from `data_dir`.
  * 'ucf101/ucf101_1' (also `_2`, `_3`, `_1_256`; `ucf101.py`): TFDS UCF101 prepared
    by the user as ArrayRecord under `data_dir`; variable-length videos, features
    'video' and 'label' only, short-side square crops (see `ucf101.py`).
  * 'videos/ucf101_<k>', 'videos/hmdb51_<k>', 'videos/kinetics400' (`video_folder.py`):
    video files and the official split lists below `data_dir`, decoded with PyAV;
    'video' and 'label'; in evaluation `eval_views` (clips, crops) per video.
With `data_config.records` set, any of them is read from an exported records file
instead (`records.py`: video only, no TensorFlow needed).

Batches follow the contract in docs/design.md: per-host dicts of numpy arrays
with keys depending on `data_config.features`, plus `_mask`.
"""
import dataclasses
import io
from collections.abc import Callable
from typing import Any, Iterator

from absl import flags
from absl import logging
import grain
import jax
import ml_collections
import numpy as np
from PIL import Image
import threadpoolctl

from videolib.data import movi
from videolib.data import movi_tracks
from videolib.data import records
from videolib.data import scenes
from videolib.data import synthetic
from videolib.data import ucf101
from videolib.data import video_folder

FEATURES = ("video", "depth", "segmentations", "boxes", "tracks", "label")
_SYNTHETIC_PREFIX = "synthetic_movi/"
# Crop distribution of kubric's point-tracking pipeline (MOVi-style).
_CROP_AREA = (0.3, 1.0)
_CROP_ASPECT = (0.5, 2.0)
# VideoMAE's fine-tuning crop (Inception-style) for video files.
_VIDEO_FILE_CROP_AREA = (0.08, 1.0)
_VIDEO_FILE_CROP_ASPECT = (3 / 4, 4 / 3)
_CROP_ATTEMPTS = 10


def default_data_config() -> ml_collections.ConfigDict:
  """Data config with documented defaults (the tiny synthetic setting)."""
  return ml_collections.ConfigDict(dict(
      # 'synthetic_movi/<H>x<W>_<T>f[_<R>x]' (see synthetic.config_name) or
      # 'movi_<a..f>/<H>x<W>' or 'ucf101/ucf101_<1|2|3|1_256>'.
      name="synthetic_movi/32x32_24f",
      # Directory holding the TFDS datasets (local or gs://); None = TFDS default
      # (~/tensorflow_datasets). Synthetic datasets are written there.
      data_dir=ml_collections.config_dict.placeholder(str),
      # An exported records file (`records.py`; video only): when set, both splits are
      # read from it instead of TFDS, so no TensorFlow is needed. None = TFDS.
      records=ml_collections.config_dict.placeholder(str),
      train_split="train",
      eval_split="validation",
      num_frames=8,  # Window length T.
      frame_stride=1,  # Take every k-th stored frame.
      resolution=32,  # Output H = W (or an (H, W) tuple); <= stored size.
      # Training only: distorted crop, area 0.3-1, aspect 0.5-2 (TFDS UCF101: a randomly
      # placed short-side square instead of the centred one; video folders: area 0.08-1,
      # aspect 3/4-4/3, as VideoMAE fine-tunes).
      random_crop=True,
      random_flip=False,  # Training only, video folders: mirror half the clips.
      # Evaluation, video folders: (clips, crops) views per video, VideoMAE's protocol
      # (clips evenly spaced over the video x short-side squares along the long side);
      # batches then also hold 'video_views' [B, clips * crops, T, H, W, 3].
      eval_views=(1, 1),
      features=("video",),  # Subset of FEATURES.
      num_tracks=64,  # N: point tracks per example (padded, see tracks_valid).
      max_instances=10,  # K: box tracks per example (MOVi-E has up to 23).
      num_eval_examples=-1,  # -1 = the whole eval split.
      num_threads=2,  # grain reader threads per host.
      prefetch_batches=4,  # Batches prepared ahead per host.
      worker_count=0,  # > 0: that many grain worker processes per host.
  ))


def completed_config(data_config) -> ml_collections.ConfigDict:
  """A copy of `data_config` holding every field of `default_data_config`.

  For data configs saved by runs from before a field existed: the default is the value
  that reproduces how those runs read their data.
  """
  completed = default_data_config()
  completed.update(data_config.to_dict())
  return completed


@dataclasses.dataclass(frozen=True)
class _Stored:
  """What the stored dataset holds (None: varies per video)."""
  num_frames: int | None
  height: int | None
  width: int | None
  kind: str  # The adapter's (`DATASETS`).
  num_classes: int | None = None  # Classes of 'label'; None: no labels.

  @property
  def is_movi(self) -> bool:
    return self.kind == "movi"


def _resolution(data_config) -> tuple[int, int]:
  res = data_config.resolution
  return (int(res), int(res)) if np.ndim(res) == 0 else (int(res[0]), int(res[1]))


def _adapter(name: str) -> "DatasetAdapter":
  """The adapter of the dataset `name` (`DATASETS`)."""
  for adapter in DATASETS:
    if adapter.matches(name):
      return adapter
  raise ValueError(f"Unknown dataset {name!r}: expected " + "; ".join(
      adapter.name_form for adapter in DATASETS) + ".")


def _stored_info(data_config) -> _Stored:
  """Stored video shape and class count, from the config name alone (no data is read)."""
  return _adapter(data_config.name).stored(data_config.name)


def num_classes(data_config) -> int | None:
  """Classes of the configured dataset's 'label' (None: it has no labels)."""
  return _stored_info(data_config).num_classes


def validate_config(data_config, stored: _Stored | None = None) -> _Stored:
  """Raises ValueError for settings the data cannot satisfy, naming the limits."""
  stored = stored or _stored_info(data_config)
  unknown = set(data_config.features) - set(FEATURES)
  if unknown:
    raise ValueError(f"Unknown data features {sorted(unknown)}; choose from {FEATURES}.")
  if data_config.num_frames < 1 or data_config.frame_stride < 1:
    raise ValueError(f"num_frames={data_config.num_frames} and frame_stride="
                     f"{data_config.frame_stride} must be >= 1.")
  span = (data_config.num_frames - 1) * data_config.frame_stride + 1
  if stored.num_frames is not None and span > stored.num_frames:
    raise ValueError(
        f"A window of num_frames={data_config.num_frames} at frame_stride="
        f"{data_config.frame_stride} spans {span} frames, but {data_config.name} "
        f"videos have {stored.num_frames} frames.")
  height, width = _resolution(data_config)
  if min(height, width) < 1 or (stored.height is not None and (
      height > stored.height or width > stored.width)):
    raise ValueError(
        f"resolution={(height, width)} is larger than the {data_config.name} frames "
        f"({stored.height}, {stored.width}) (or not positive); crops are resized "
        "down or kept, never upsampled beyond the stored frame size.")
  adapter = _adapter(data_config.name)
  if "label" in data_config.features and stored.num_classes is None:
    raise ValueError(f"{data_config.name} has no motion class label; 'label' exists for "
                     "synthetic_movi and the action-recognition datasets.")
  missing = set(data_config.features) - set(adapter.features)
  if missing:
    *others, last = (repr(feature) for feature in adapter.features)
    raise ValueError(f"config.data.features={tuple(data_config.features)}: "
                     f"{data_config.name} has only {', '.join(others)} and {last}.")
  clips, crops = data_config.eval_views
  if not adapter.views_and_flips and ((clips, crops) != (1, 1) or data_config.random_flip):
    raise ValueError(f"config.data.eval_views={tuple(data_config.eval_views)} and random_flip="
                     f"{data_config.random_flip}: only video folders ('videos/...') support "
                     "views and flips; keep (1, 1) and False.")
  if clips < 1 or crops < 1:
    raise ValueError(f"config.data.eval_views={tuple(data_config.eval_views)} must be "
                     "positive (clips, crops).")
  if adapter.square_clips and height != width:
    raise ValueError(f"config.data.resolution={data_config.resolution}: "
                     f"{data_config.name} clips are square crops; give one size.")
  if stored.kind == "movi" and "tracks" in data_config.features and (
      stored.height != stored.width):
    raise ValueError(f"Point tracks for {data_config.name} need square frames "
                     "(`movi_tracks.py`); every published MOVi variant has them.")
  return stored


def _load_builder(data_config):
  """The TFDS builder of the configured dataset (its adapter's `load_builder`)."""
  return _adapter(data_config.name).load_builder(data_config.name, data_config.data_dir)


def _synthetic_builder(name: str, data_dir: str | None):
  """The synthetic dataset's builder, rendered on first use."""
  builder = synthetic.SyntheticMovi(config=name[len(_SYNTHETIC_PREFIX):], data_dir=data_dir,
                                    file_format="array_record")
  if not builder.is_prepared():
    logging.info("Rendering %s into %s (first use only; about 30 videos/s on one core).",
                 name, builder.data_dir)
  builder.download_and_prepare()
  return builder


def _decoders(builder) -> dict:
  """numpy decoders: pixel layers stay PNG bytes, decoded per window frame later."""
  decoders = movi.numpy_decoders(builder.info.features)
  for key in ("video", "segmentations", "depth"):
    if key in builder.info.features:
      decoders[key] = movi.NoDecoding()
  return decoders


class _CheckedSource(grain.sources.RandomAccessDataSource):
  """Data source returning records checked against the expected layout."""

  def __init__(self, builder, split: str, features, stored: _Stored):
    self._source = builder.as_data_source(split, decoders=_decoders(builder))
    self._builder_name = builder.info.full_name
    self._split = split
    self._features = tuple(features)
    self._stored = stored

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    try:
      record = self._source[int(index)]
    except Exception as error:  # array_record / protobuf raise many types on bad bytes.
      raise ValueError(
          f"Record {self._split}[{int(index)}] of {self._builder_name} cannot be read as a "
          f"TFDS example ({type(error).__name__}: {error}). The dataset file is corrupt: "
          "re-copy or re-generate it."
      ) from error
    return _check_record(_unpack(record, self._features, self._stored), self._split,
                         int(index), self._stored)


def _lifts_tracks(features, stored: _Stored) -> bool:
  """MOVi holds no point tracks: they are lifted from its layers (`movi_tracks.py`)."""
  return stored.is_movi and "tracks" in features


def _unpack(record: dict, features, stored: _Stored) -> dict[str, Any]:
  """TFDS record (MOVi or UCF101 layout) -> flat dict; pixel layers as per-frame bytes."""
  unpacked = {"video": list(record["video"]),
              # UCF101 stores no name; records are then named by split and index only.
              "video_name": record.get("metadata", {}).get("video_name")}
  lift = _lifts_tracks(features, stored)
  if "segmentations" in features or lift:
    unpacked["segmentations"] = list(record["segmentations"])
  if "depth" in features or lift:
    unpacked["depth"] = list(record["depth"])
    unpacked["depth_range"] = np.asarray(record["metadata"]["depth_range"])
  if lift:
    for key in ("object_coordinates", "normal"):
      unpacked[key] = list(record[key])
    camera, instances = record["camera"], record["instances"]

    def per_instance(values, shape):  # A video without objects stores empty lists.
      array = np.asarray(values, np.float64)
      return array if array.size else array.reshape((0, stored.num_frames) + shape)

    unpacked.update(
        focal_length=float(camera["focal_length"]),
        sensor_width=float(camera["sensor_width"]),
        camera_positions=np.asarray(camera["positions"], np.float64),
        camera_quaternions=np.asarray(camera["quaternions"], np.float64),
        bboxes_3d=per_instance(instances["bboxes_3d"], (8, 3)),
        object_quaternions=per_instance(instances["quaternions"], (4,)))
  if "boxes" in features:
    instances = record["instances"]
    unpacked["instance_boxes"] = [
        np.asarray(b, np.float32).reshape(-1, 4) for b in instances["bboxes"]]
    unpacked["instance_box_frames"] = [
        np.asarray(f, np.int64).reshape(-1) for f in instances["bbox_frames"]]
  if "tracks" in features and not lift:
    for key in ("target_points", "occluded"):
      unpacked[key] = np.asarray(record[key])
  if "label" in features:
    unpacked["label"] = record["label"]
  return unpacked


_FRAME_LAYOUT = {"video": (3, np.uint8), "segmentations": (1, np.uint8),
                 "depth": (1, np.uint16), "object_coordinates": (3, np.uint16),
                 "normal": (3, np.uint16)}
# Camera and instance arrays the track lift reads: shape after the frame axis.
_LIFT_LAYOUT = {"camera_positions": (3,), "camera_quaternions": (4,),
                "bboxes_3d": (8, 3), "object_quaternions": (4,)}
_PER_INSTANCE = ("bboxes_3d", "object_quaternions")


def _where(record: dict) -> str:
  where = f"{record['split']}[{record['index']}]"
  if record["video_name"] is None:
    return where
  return f"{where} (video_name={record['video_name']!r})"


def _check_record(record: dict, split: str, index: int, stored: _Stored) -> dict:
  """Raises ValueError naming the record and the expectation if it is malformed."""
  record.update(split=split, index=index)
  t = stored.num_frames
  if t is None and not record["video"]:
    raise ValueError(f"Record {_where(record)}: video has no frames.")
  if stored.num_classes and "label" in record and not (
      0 <= record["label"] < stored.num_classes):
    raise ValueError(f"Record {_where(record)}: label {record['label']} is outside "
                     f"[0, {stored.num_classes}).")
  for key in _FRAME_LAYOUT:
    if t is not None and key in record and len(record[key]) != t:
      raise ValueError(f"Record {_where(record)}: {key} has {len(record[key])} "
                       f"frames, expected {t}.")
  if "depth_range" in record and record["depth_range"].shape != (2,):
    raise ValueError(f"Record {_where(record)}: metadata/depth_range has shape "
                     f"{record['depth_range'].shape}, expected (2,).")
  if "target_points" in record:
    num_tracks = record["target_points"].shape[0]
    if (record["target_points"].shape != (num_tracks, t, 2)
        or record["occluded"].shape != (num_tracks, t)):
      raise ValueError(f"Record {_where(record)}: target_points "
                       f"{record['target_points'].shape} / occluded "
                       f"{record['occluded'].shape}, expected (N, {t}, 2) / (N, {t}).")
  for key, shape in _LIFT_LAYOUT.items():
    if key not in record:
      continue
    expected = (t,) + shape
    actual = record[key].shape[1:] if key in _PER_INSTANCE else record[key].shape
    if actual != expected:
      raise ValueError(f"Record {_where(record)}: {key} has shape {record[key].shape}, "
                       f"expected {('K',) + expected if key in _PER_INSTANCE else expected}.")
  for key in ("depth_range", "target_points", *_LIFT_LAYOUT):
    if key in record and not np.all(np.isfinite(record[key])):
      raise ValueError(f"Record {_where(record)}: {key} contains NaN or inf.")
  if "focal_length" in record and not (record["focal_length"] > 0
                                        and record["sensor_width"] > 0):
    raise ValueError(f"Record {_where(record)}: camera focal_length "
                     f"{record['focal_length']} and sensor_width {record['sensor_width']} "
                     "must be positive.")
  for boxes in record.get("instance_boxes", []):
    if not np.all(np.isfinite(boxes)):
      raise ValueError(f"Record {_where(record)}: instances/bboxes contain NaN or inf.")
  return record


def _decode_frames(record: dict, key: str, frames: np.ndarray, stored: _Stored):
  """Decodes the PNG (UCF101: JPEG) frames `frames` of `key` -> [T, H, W, C], checked."""
  channels, dtype = _FRAME_LAYOUT[key]
  decoded = []
  for f in frames:
    try:
      if key in movi.RGB16_LAYERS:
        decoded.append(movi.decode_rgb16_png(record[key][f]))
        continue
      with Image.open(io.BytesIO(record[key][f])) as image:
        decoded.append(np.asarray(image, dtype=dtype if image.mode.startswith("I") else None))
    except OSError as error:  # PIL's UnidentifiedImageError and truncated-file errors.
      raise ValueError(f"Record {_where(record)}: frame {f} of {key} is not a decodable "
                       f"image ({error}).") from error
  if len({frame.shape for frame in decoded}) > 1:
    raise ValueError(f"Record {_where(record)}: {key} frames have different shapes "
                     f"{sorted({frame.shape for frame in decoded})}.")
  decoded = np.stack(decoded)
  decoded = decoded.reshape(decoded.shape[:3] + (-1,))
  expected = (len(frames), stored.height or decoded.shape[1],
              stored.width or decoded.shape[2], channels)
  if decoded.shape != expected or decoded.dtype != dtype:
    raise ValueError(f"Record {_where(record)}: {key} frames decode to shape "
                     f"{decoded.shape[1:]} dtype {decoded.dtype}, expected "
                     f"{expected[1:]} {np.dtype(dtype)}.")
  return decoded


def _sample_crop(rng: np.random.Generator, height: int, width: int,
                 area_range=_CROP_AREA, aspect_range=_CROP_ASPECT):
  """Distorted crop (by default area 0.3-1, aspect 0.5-2) as integer (y0, x0, h, w)."""
  for _ in range(_CROP_ATTEMPTS):
    area = rng.uniform(*area_range) * height * width
    aspect = np.exp(rng.uniform(*np.log(aspect_range)))  # width / height
    crop_h = int(round(np.sqrt(area / aspect)))
    crop_w = int(round(np.sqrt(area * aspect)))
    if 0 < crop_h <= height and 0 < crop_w <= width:
      return (int(rng.integers(height - crop_h + 1)), int(rng.integers(width - crop_w + 1)),
              crop_h, crop_w)
  return 0, 0, height, width


def _linear_weights(start: int, size: int, out: int, total: int) -> np.ndarray:
  """[out, total] matrix: crop [start, start + size) then linear resize to `out`.

  A triangle kernel widened by the downscale factor (antialiasing, as
  jax.image.resize); rows are normalised, which handles the borders.
  """
  centres = start + (np.arange(out) + 0.5) * size / out - 0.5
  scale = max(1.0, size / out)
  distance = np.abs(centres[:, None] - np.arange(total)[None, :]) / scale
  weights = np.maximum(0.0, 1.0 - distance)
  weights[:, :start] = 0.0
  weights[:, start + size:] = 0.0
  return (weights / weights.sum(-1, keepdims=True)).astype(np.float32)


def _resize_video(video: np.ndarray, crop, out_hw) -> np.ndarray:
  """uint8 [T, H, W, 3] -> crop, linear resize -> float32 [T, h, w, 3] in [0, 1]."""
  y0, x0, crop_h, crop_w = crop
  _, height, width, _ = video.shape
  if crop == (0, 0, height, width) and out_hw == (height, width):
    return video.astype(np.float32) * (1.0 / 255.0)
  rows = _linear_weights(y0, crop_h, out_hw[0], height)
  cols = _linear_weights(x0, crop_w, out_hw[1], width)
  channels_first = np.moveaxis(video, -1, 1).astype(np.float32) * (1.0 / 255.0)
  resized = rows @ channels_first @ cols.T  # [T, 3, h, w]
  return np.ascontiguousarray(np.moveaxis(resized, 1, -1))


def _nearest_indices(start: int, size: int, out: int) -> np.ndarray:
  """Source index of each output pixel for a nearest-neighbour crop-resize."""
  return np.minimum(start + np.floor((np.arange(out) + 0.5) * size / out).astype(int),
                    start + size - 1)


def _dense_boxes(record: dict, frames: np.ndarray, crop, stored: _Stored,
                 max_instances: int):
  """Ragged MOVi boxes -> [T, K, 4] in crop coordinates and validity [T, K]."""
  total = stored.num_frames
  boxes = np.zeros((max_instances, total, 4), np.float32)
  valid = np.zeros((max_instances, total), bool)
  for k, (b, f) in enumerate(zip(record["instance_boxes"][:max_instances],
                                 record["instance_box_frames"][:max_instances])):
    boxes[k, f], valid[k, f] = b, True
  boxes, valid = boxes[:, frames].transpose(1, 0, 2), valid[:, frames].T
  y0, x0, crop_h, crop_w = crop
  offset = np.array([y0 / stored.height, x0 / stored.width] * 2, np.float32)
  scale = np.array([stored.height / crop_h, stored.width / crop_w] * 2, np.float32)
  boxes = np.clip((boxes - offset) * scale, 0.0, 1.0)
  valid &= (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
  return np.where(valid[..., None], boxes, 0.0).astype(np.float32), valid


def _lifted_tracks(record: dict, frames: np.ndarray, crop, depth: np.ndarray,
                   segmentations: np.ndarray, num_tracks: int, rng: np.random.Generator,
                   stored: _Stored):
  """MOVi: up to `num_tracks` tracks queried on the clip's first frame (`movi_tracks.py`).

  Returns (x, y) stored pixels [n, T, 2] and occlusion [n, T] on the clip's frames.
  """
  clip = movi_tracks.ClipLayers(
      depth=depth, segmentations=segmentations,
      object_coordinates=_decode_frames(record, "object_coordinates", frames[:1], stored)[0],
      normals=_decode_frames(record, "normal", frames[:1], stored)[0],
      bboxes_3d=record["bboxes_3d"][:, frames],
      object_quaternions=record["object_quaternions"][:, frames],
      camera_positions=record["camera_positions"][frames],
      camera_quaternions=record["camera_quaternions"][frames],
      focal_length=record["focal_length"], sensor_width=record["sensor_width"])
  queries = movi_tracks.sample_queries(segmentations[0], crop, num_tracks, rng)
  try:
    return movi_tracks.lift_tracks(clip, queries)
  except ValueError as error:
    raise ValueError(f"Record {_where(record)}: {error}") from error


def _window_tracks(points: np.ndarray, occluded: np.ndarray, crop, out_hw,
                   num_tracks: int, rng: np.random.Generator | None):
  """Tracks on the window's frames ([M, T, 2] stored pixels, [M, T]) -> the batch's.

  Positions go to output pixels of the crop. Tracks occluded (or outside the crop)
  at the window's first frame cannot be queried there; visible ones are preferred
  and the rest is padding with `tracks_valid=False`.
  """
  y0, x0, crop_h, crop_w = crop
  scale = np.array([out_hw[1] / crop_w, out_hw[0] / crop_h], np.float32)
  points = (points - np.array([x0, y0], np.float32)) * scale
  outside = ((points[..., 0] < 0) | (points[..., 0] >= out_hw[1]) |
             (points[..., 1] < 0) | (points[..., 1] >= out_hw[0]))
  occluded = occluded | outside
  order = np.arange(len(points)) if rng is None else rng.permutation(len(points))
  chosen = order[~occluded[order, 0]][:num_tracks]
  n, num_frames = len(chosen), points.shape[1]
  target = np.zeros((num_tracks, num_frames, 2), np.float32)
  target[:n] = points[chosen]
  occ = np.ones((num_tracks, num_frames), bool)
  occ[:n] = occluded[chosen]
  query = np.zeros((num_tracks, 3), np.float32)
  query[:n, 1], query[:n, 2] = target[:n, 0, 1], target[:n, 0, 0]
  return {"query_points": query, "target_points": target, "occluded": occ,
          "tracks_valid": np.arange(num_tracks) < n}


def preprocess(record: dict, data_config, stored: _Stored,
               rng: np.random.Generator | None) -> dict[str, np.ndarray]:
  """One record -> one example of the batch contract (docs/design.md), by the dataset's
  adapter (`DATASETS`); see `_preprocess_movi_layout` for the arguments."""
  return _adapter(data_config.name).preprocess(record, data_config, stored, rng)


def _preprocess_movi_layout(record: dict, data_config, stored: _Stored,
                            rng: np.random.Generator | None) -> dict[str, np.ndarray]:
  """A synthetic or MOVi record -> one example of the batch contract (docs/design.md).

  Args:
    record: output of the checked source (`_unpack` layout).
    data_config: the data config.
    stored: stored video shape.
    rng: training randomness (window start, crop, track choice); None = eval
      (window at frame 0, full frame, tracks in stored order; MOVi's lifted tracks
      drawn from a generator seeded with the record's index).

  Returns:
    dict of numpy arrays without the batch dimension, `_mask` included.
  """
  features = data_config.features
  span = (data_config.num_frames - 1) * data_config.frame_stride + 1
  start = 0 if rng is None else int(rng.integers(stored.num_frames - span + 1))
  frames = start + data_config.frame_stride * np.arange(data_config.num_frames)
  crop = (0, 0, stored.height, stored.width)
  if rng is not None and data_config.random_crop:
    crop = _sample_crop(rng, stored.height, stored.width)
  out_h, out_w = _resolution(data_config)
  y0, x0, crop_h, crop_w = crop
  rows = _nearest_indices(y0, crop_h, out_h)
  cols = _nearest_indices(x0, crop_w, out_w)

  lift = _lifts_tracks(features, stored)
  example = {"_mask": np.array(True)}
  if "video" in features:
    video = _decode_frames(record, "video", frames, stored)
    example["video"] = _resize_video(video, crop, (out_h, out_w))
  if "depth" in features or lift:  # [T, H, W, 1] at the stored resolution.
    depth = scenes.decode_depth(_decode_frames(record, "depth", frames, stored),
                                record["depth_range"])
  if "depth" in features:
    example["depth"] = depth[:, rows][:, :, cols]
  if "segmentations" in features or lift:
    seg = _decode_frames(record, "segmentations", frames, stored).astype(np.int32)
  if "segmentations" in features:
    example["segmentations"] = seg[:, rows][:, :, cols]
  if "boxes" in features:
    example["boxes"], example["boxes_valid"] = _dense_boxes(
        record, frames, crop, stored, data_config.max_instances)
  if lift:
    # Eval draws its queries from the record's index, so they are the same every time.
    points, occluded = _lifted_tracks(
        record, frames, crop, depth[..., 0], seg[..., 0], data_config.num_tracks,
        np.random.default_rng(record["index"]) if rng is None else rng, stored)
  elif "tracks" in features:
    points, occluded = record["target_points"][:, frames], record["occluded"][:, frames]
  if "tracks" in features:
    example.update(_window_tracks(points, occluded, crop, (out_h, out_w),
                                  data_config.num_tracks, rng))
  if "label" in features:
    example["label"] = np.array(record["label"], np.int32)
  return example


def _preprocess_ucf101(record: dict, data_config, stored: _Stored,
                       rng: np.random.Generator | None) -> dict[str, np.ndarray]:
  """A UCF101 record -> clip and label (sampling rules in `ucf101.py`).

  Frames: random start in training, centred in eval, the last frame repeated past the
  end of short videos. Space: a short-side square (random position in training with
  `random_crop`, else centred) resized to `resolution`.
  """
  frames = ucf101.clip_frame_indices(len(record["video"]), data_config.num_frames,
                                     data_config.frame_stride, rng)
  unique, inverse = np.unique(frames, return_inverse=True)  # Repeats decode once.
  video = _decode_frames(record, "video", unique, stored)[inverse]
  crop_rng = rng if data_config.random_crop else None
  crop = ucf101.square_crop(video.shape[1], video.shape[2], crop_rng)
  example = {"_mask": np.array(True),
             "video": _resize_video(video, crop, _resolution(data_config))}
  if "label" in data_config.features:
    example["label"] = np.array(record["label"], np.int32)
  return example


def batch_spec(data_config, global_batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Global shapes and dtypes of a batch (train and eval alike), without reading any data.

  Args:
    data_config: the data config.
    global_batch_size: batch size summed over hosts.

  Returns:
    dict of `jax.ShapeDtypeStruct` with the keys of a batch.
  """
  validate_config(data_config)
  b, t = global_batch_size, data_config.num_frames
  h, w = _resolution(data_config)
  k, n = data_config.max_instances, data_config.num_tracks
  shapes = {"_mask": ((b,), np.bool_)}
  features = data_config.features
  if "video" in features:
    shapes["video"] = ((b, t, h, w, 3), np.float32)
  if "depth" in features:
    shapes["depth"] = ((b, t, h, w, 1), np.float32)
  if "segmentations" in features:
    shapes["segmentations"] = ((b, t, h, w, 1), np.int32)
  if "boxes" in features:
    shapes["boxes"] = ((b, t, k, 4), np.float32)
    shapes["boxes_valid"] = ((b, t, k), np.bool_)
  if "tracks" in features:
    shapes.update(query_points=((b, n, 3), np.float32),
                  target_points=((b, n, t, 2), np.float32),
                  occluded=((b, n, t), np.bool_), tracks_valid=((b, n), np.bool_))
  if "label" in features:
    shapes["label"] = ((b,), np.int32)
  return {key: jax.ShapeDtypeStruct(s, d) for key, (s, d) in shapes.items()}


class DataIterator(Iterator[dict[str, np.ndarray]]):
  """Iterator over per-host batches with a JSON-serialisable state."""

  def __init__(self, dataset: grain.IterDataset, num_batches: int | None = None):
    self._iterator = iter(dataset)
    self.num_batches = num_batches  # None = infinite.

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iterator)

  def get_state(self) -> dict[str, Any]:
    """Position of the iterator; pass to `set_state` to resume from here."""
    return self._iterator.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._iterator.set_state(state)


def _hosts(process_index, process_count, global_batch_size) -> tuple[int, int, int]:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible by "
                     f"process_count={process_count}.")
  return process_index, process_count, global_batch_size // process_count


def _single_threaded_blas(*unused_worker_info) -> None:
  """Makes numpy's BLAS (the crop-resize matmuls) single-threaded in this process.

  The pipeline parallelises over examples (grain reader threads, worker processes);
  a multi-threaded BLAS inside each small matmul only oversubscribes the cores: with
  random crops at 128², 2 worker processes read 41 examples/s with OpenBLAS's default
  threads and 299 with one (docs/data.md). Process-wide; jax does not use numpy's BLAS.
  Also the grain `worker_init_fn` (called with the worker index and count).
  """
  threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _to_iterator(dataset: grain.MapDataset, data_config, num_batches=None) -> DataIterator:
  _single_threaded_blas()
  iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=data_config.num_threads,
      prefetch_buffer_size=data_config.prefetch_batches))
  if data_config.worker_count > 0:
    if not flags.FLAGS.is_parsed():
      # grain 0.2.18 reads one of its absl flags when it starts workers and fails where no
      # absl app parsed them (notebooks, pytest; google/grain#1355): use the defaults.
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=data_config.worker_count),
        worker_init_fn=_single_threaded_blas)
  return DataIterator(iter_dataset, num_batches)


def hide_accelerators_from_tensorflow() -> None:
  """TF is only used for reading data; it must not grab GPU memory.

  Without TensorFlow (accelerator images often ship jax alone) there is nothing to hide,
  and data comes from a records file (`data_config.records`, `records.py`).
  """
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  tf.config.set_visible_devices([], "GPU")


def _open_source(data_config, split: str, *, training: bool
                 ) -> tuple[grain.sources.RandomAccessDataSource, _Stored]:
  """Validates the config, opens the split and checks its first record."""
  stored = validate_config(data_config)
  adapter = _adapter(data_config.name)
  if adapter.open_split is not None:
    if data_config.records or not data_config.data_dir:
      raise ValueError(f"{data_config.name} is read from its own files: set "
                       "config.data.data_dir to their folder (config.data.records is for "
                       "TFDS datasets).")
    where = f"{data_config.name} under {data_config.data_dir}"
    source = adapter.open_split(data_config, split, training)
  elif data_config.records:
    records.check_video_only(data_config)
    where = f"config.data.records={data_config.records!r}"
    source = records.read(data_config.records, data_config.name, split)
  else:
    where = data_config.name
    builder = _load_builder(data_config)
    if split not in builder.info.splits:
      raise ValueError(f"Split {split!r} not in {where} (has {sorted(builder.info.splits)}).")
    source = _CheckedSource(builder, split, data_config.features, stored)
  if len(source) == 0:
    raise ValueError(f"Split {split!r} of {where} is empty.")
  source[0]  # pylint: disable=pointless-statement  # Fails early on a bad layout.
  return source, stored


def export_records(data_config, path: str) -> None:
  """Writes the checked records of the train and eval splits to `path` (`records.py`)."""
  records.check_video_only(data_config)
  splits = {}
  for role, split in zip(records.ROLES, (data_config.train_split, data_config.eval_split)):
    source, _ = _open_source(data_config, split, training=False)
    splits[role] = (split, [source[i]["video"] for i in range(len(source))])
  records.write(path, data_config.name, splits)


def make_train_iterator(data_config, *, global_batch_size: int, seed: int,
                        process_index: int | None = None,
                        process_count: int | None = None) -> DataIterator:
  """Infinite iterator of per-host training batches, reshuffled every epoch.

  Host h of P reads examples h, h + P, ... of the split (the split is first cut
  to a multiple of P, so every host has the same epoch length), in an order
  that is a pure function of (seed, epoch); window, crop and track choice are
  a pure function of (seed, position). The same seed and `set_state` therefore
  reproduce the data exactly.

  Args:
    data_config: see `default_data_config`.
    global_batch_size: batch size summed over hosts.
    seed: data seed.
    process_index: this host; None = `jax.process_index()`.
    process_count: number of hosts; None = `jax.process_count()`.

  Returns:
    A `DataIterator` yielding dicts of numpy arrays [global_batch_size / P, ...].
  """
  process_index, process_count, local_batch = _hosts(
      process_index, process_count, global_batch_size)
  source, stored = _open_source(data_config, data_config.train_split, training=True)
  usable = len(source) - len(source) % process_count
  if usable < local_batch:
    raise ValueError(f"{data_config.train_split} of {data_config.name} has "
                     f"{usable // process_count} examples per host, fewer than the "
                     f"per-host batch {local_batch}.")

  def transform(record, rng):
    return preprocess(record, data_config, stored, rng)

  dataset = grain.MapDataset.source(source)[process_index:usable:process_count]
  dataset = dataset.shuffle(seed=seed).repeat(None)
  dataset = dataset.random_map(transform, seed=seed)
  dataset = dataset.batch(local_batch, drop_remainder=True)
  return _to_iterator(dataset, data_config)


class _PaddedEvalSource(grain.sources.RandomAccessDataSource):
  """Eval examples 0..n-1 followed by copies of example 0 with `_mask=False`."""

  def __init__(self, source, data_config, stored: _Stored, num_examples: int,
               padded_size: int):
    self._source = source
    self._data_config = data_config
    self._stored = stored
    self._num_examples = num_examples
    self._padded_size = padded_size

  def __len__(self) -> int:
    return self._padded_size

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    is_real = index < self._num_examples
    example = preprocess(self._source[index if is_real else 0], self._data_config,
                         self._stored, rng=None)
    example["_mask"] = np.array(is_real)
    return example


def make_eval_iterator(data_config, *, global_batch_size: int,
                       process_index: int | None = None,
                       process_count: int | None = None) -> DataIterator:
  """Finite iterator over the eval split: every example exactly once over hosts.

  The split (cut to `num_eval_examples`) is padded to a multiple of
  `global_batch_size` with `_mask=False` examples; host h takes padded examples
  h, h + P, ..., so every host runs the same number of batches
  (`iterator.num_batches`). Eval preprocessing is deterministic: window at
  frame 0, full frame, tracks in stored order (MOVi's lifted tracks: queries drawn
  from the record's index).

  Args:
    data_config: see `default_data_config`.
    global_batch_size: batch size summed over hosts.
    process_index: this host; None = `jax.process_index()`.
    process_count: number of hosts; None = `jax.process_count()`.

  Returns:
    A `DataIterator` with `num_batches` batches of [global_batch_size / P, ...].
  """
  process_index, process_count, local_batch = _hosts(
      process_index, process_count, global_batch_size)
  source, stored = _open_source(data_config, data_config.eval_split, training=False)
  num_examples = len(source)
  if data_config.num_eval_examples >= 0:
    num_examples = min(num_examples, data_config.num_eval_examples)
  num_batches = -(-num_examples // global_batch_size)
  padded = _PaddedEvalSource(source, data_config, stored, num_examples,
                             num_batches * global_batch_size)
  dataset = grain.MapDataset.source(padded)[process_index::process_count]
  dataset = dataset.batch(local_batch, drop_remainder=True)
  return _to_iterator(dataset, data_config, num_batches)


def _preprocess_video_file(record: dict, data_config, stored: _Stored,
                           rng: np.random.Generator | None) -> dict[str, np.ndarray]:
  """A video file -> clip and label (`video_folder.py`).

  Training: a random window (`ucf101.clip_frame_indices`: the last frame repeats past
  the end of short videos), an Inception-style random crop with `random_crop` (else the
  centred short-side square), mirrored half the time with `random_flip`. Evaluation:
  `eval_views` = (clips, crops) views, clips evenly spaced over the video and short-side
  squares spread along the long side; 'video' is the centre view.
  """
  del stored  # Frame count and size vary per video: the record has them.
  num_frames, stride = data_config.num_frames, data_config.frame_stride
  out_hw = _resolution(data_config)
  count = record["num_video_frames"]
  if rng is not None:
    frames = ucf101.clip_frame_indices(count, num_frames, stride, rng)
    video = video_folder.decode_frames(record["path"], frames, strict=False)
    height, width = video.shape[1:3]
    crop = (_sample_crop(rng, height, width, _VIDEO_FILE_CROP_AREA, _VIDEO_FILE_CROP_ASPECT)
            if data_config.random_crop else video_folder.spatial_crops(height, width, 1)[0])
    clip = _resize_video(video, crop, out_hw)
    if data_config.random_flip and rng.random() < 0.5:
      clip = clip[:, :, ::-1]
    example = {"_mask": np.array(True), "video": np.ascontiguousarray(clip)}
  else:
    num_clips, num_crops = data_config.eval_views
    span = (num_frames - 1) * stride + 1
    starts = video_folder.clip_starts(count, span, num_clips)
    frames = np.minimum(starts[:, None] + stride * np.arange(num_frames), count - 1)
    video = video_folder.decode_frames(record["path"], frames.reshape(-1), strict=True)
    video = video.reshape(frames.shape + video.shape[1:])
    crops = video_folder.spatial_crops(video.shape[2], video.shape[3], num_crops)
    views = np.stack([_resize_video(clip, crop, out_hw) for clip in video for crop in crops])
    example = {"_mask": np.array(True), "video": views[len(views) // 2]}
    if num_clips * num_crops > 1:
      example["video_views"] = views
  if "label" in data_config.features:
    example["label"] = np.array(record["label"], np.int32)
  return example


# ----------------------------------------------------------------------------------------
# The dataset registry: one adapter per family of datasets, chosen by name.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetAdapter:
  """What the generic pipeline needs to know about one family of datasets.

  Attributes:
    name_form: the names it reads, for error messages.
    matches: whether a `config.data.name` belongs to it.
    stored: name -> what its stored videos hold, from the name alone.
    features: the batch features it can give.
    preprocess: (record, data_config, stored, rng or None in evaluation) -> example.
    load_builder: (name, data_dir) -> TFDS builder, for datasets stored with TFDS.
    open_split: (data_config, split, training) -> data source, for the others.
    square_clips: whether `resolution` must be one size.
    views_and_flips: whether `eval_views` and `random_flip` apply.
  """
  name_form: str
  matches: Callable[[str], bool]
  stored: Callable[[str], _Stored]
  features: tuple[str, ...]
  preprocess: Callable[..., dict[str, np.ndarray]]
  load_builder: Callable[[str, str | None], Any] | None = None
  open_split: Callable[..., grain.sources.RandomAccessDataSource] | None = None
  square_clips: bool = False
  views_and_flips: bool = False


def _synthetic_stored(name: str) -> _Stored:
  c = synthetic.config_from_name(name[len(_SYNTHETIC_PREFIX):])
  return _Stored(c.num_frames, c.height, c.width, kind="synthetic",
                 num_classes=len(scenes.CLASS_NAMES))


def _movi_stored(name: str) -> _Stored:
  _, config = movi.parse_name(name)
  height, width = (int(v) for v in config.split("x"))
  return _Stored(24, height, width, kind="movi")


def _ucf101_stored(name: str) -> _Stored:
  height, width = ucf101.frame_size(name) or (None, None)
  return _Stored(None, height, width, kind="ucf101", num_classes=ucf101.NUM_CLASSES)


def _video_folder_stored(name: str) -> _Stored:
  return _Stored(None, None, None, kind="video_folder",
                 num_classes=video_folder.num_classes(name))


DATASETS = (
    DatasetAdapter(
        name_form="'synthetic_movi/<config>' (e.g. 'synthetic_movi/32x32_24f')",
        matches=lambda name: name.startswith(_SYNTHETIC_PREFIX), stored=_synthetic_stored,
        features=FEATURES, preprocess=_preprocess_movi_layout, load_builder=_synthetic_builder),
    DatasetAdapter(
        name_form=f"one of {movi.MOVI_VARIANTS} with a resolution (e.g. "
        "'movi_e/128x128')", matches=movi.is_movi, stored=_movi_stored,
        features=FEATURES,
        preprocess=_preprocess_movi_layout, load_builder=movi.load_builder),
    DatasetAdapter(
        name_form="'ucf101/ucf101_<1|2|3|1_256>' (TFDS)",
        matches=ucf101.is_ucf101, stored=_ucf101_stored, features=("video", "label"),
        preprocess=_preprocess_ucf101, load_builder=ucf101.load_builder, square_clips=True),
    DatasetAdapter(
        name_form="a folder of video files ('videos/ucf101_<k>', "
        "'videos/hmdb51_<k>', 'videos/kinetics400')",
        matches=video_folder.is_video_folder, stored=_video_folder_stored,
        features=("video", "label"),
        preprocess=_preprocess_video_file,
        open_split=lambda config, split, training: video_folder.Source(
            config.name, config.data_dir, split, training=training),
        square_clips=True, views_and_flips=True),
)
