"""Reader for TFDS `ucf101` (action recognition, 101 classes), prepared as ArrayRecord.

The dataset is built by the user with TFDS's own `ucf101` builder (tensorflow_datasets
4.9.10, `tensorflow_datasets/video/ucf101.py`, version 2.0.0), straight into the
ArrayRecord format the grain pipeline reads:

  pip install tensorflow-datasets   # the ffmpeg binary must be on PATH
  tfds build ucf101 --config=ucf101_1 --data_dir=<data_dir> --file_format=array_record

(downloads UCF101_videos.zip, ~6.5 GB, and the split lists; every frame is decoded by
ffmpeg and stored as a JPEG, so the prepared native-resolution dataset is much larger than
the zip). A copy already prepared as TFRecord converts in place with

  tfds convert_format --dataset_version_dir=<data_dir>/ucf101/ucf101_1/2.0.0 \
      --out_file_format=array_record

Reading needs no builder code: `tfds.builder_from_directory(<data_dir>/ucf101/<config>/2.0.0)`.
Features (`ucf101` builder): `video` = `tfds.features.Video` of JPEG frames, shape
(None, None, None, 3) uint8 for `ucf101_{1,2,3}` (native 320 x 240, 25 fps, variable
length) and (None, 256, 256, 3) for `ucf101_1_256` (ffmpeg-resized, aspect distorted);
`label` = `ClassLabel` with 101 names, 0-based. Splits `train` / `test` (split 1: 9,537 /
3,783 clips).

What the pipeline does with it (`clip_frame_indices`, `square_crop`; docs/data.md):
  * frames: `num_frames` frames at `frame_stride` (VideoMAE's UCF101 recipe: 16 at stride
    4). Training: a uniformly random start among the full windows; evaluation: the window
    centred in the video. A video shorter than the window repeats its last frame (as
    VideoMAE's loader does), so every video is usable and the tail has no motion.
  * space: the largest centred (eval) or randomly placed (training, `random_crop=True`)
    square of side min(H, W), resized (linear, antialiased) to `resolution`. This is a
    short-side resize to `resolution` followed by a `resolution`-square crop. No scale
    jitter, flips or colour augmentation. A frame smaller than `resolution` is upsampled.
  * evaluation views: one window per video from the pipeline; `mgtc.task` cuts
    `eval_clips` evenly spaced clips from it. VideoMAE's 5 clips x 3 crops over the whole
    video are not implemented.
"""
import numpy as np
import tensorflow_datasets as tfds

from videolib.data import prepared

NAME = "ucf101"
VERSION = "2.0.0"
# TFDS configs of the `ucf101` builder -> stored frame size (None = native, 320 x 240).
CONFIGS = {"ucf101_1": None, "ucf101_2": None, "ucf101_3": None, "ucf101_1_256": (256, 256)}
NUM_CLASSES = 101


def is_ucf101(name: str) -> bool:
  """Whether `name` ('ucf101/ucf101_1') refers to TFDS UCF101."""
  return name.split("/")[0] == NAME


def parse_name(name: str) -> str:
  """'ucf101/ucf101_1' -> 'ucf101_1'; raises on unknown names."""
  dataset, _, config = name.partition("/")
  if dataset != NAME or config not in CONFIGS:
    raise ValueError(f"Unknown UCF101 dataset {name!r}: expected 'ucf101/<config>' with "
                     f"config in {sorted(CONFIGS)}, e.g. 'ucf101/ucf101_1' (split 1).")
  return config


def frame_size(name: str) -> tuple[int, int] | None:
  """Stored (H, W) of every video, or None when native (variable, 320 x 240 in practice)."""
  return CONFIGS[parse_name(name)]


def dataset_dir(name: str, data_dir: str) -> str:
  """Directory of the prepared dataset: <data_dir>/ucf101/<config>/2.0.0."""
  return f"{str(data_dir).rstrip('/')}/{NAME}/{parse_name(name)}/{VERSION}"


def prepare_instructions(name: str, data_dir: str) -> str:
  """Commands that put `name` under `data_dir` in the format the pipeline reads."""
  config = parse_name(name)
  return (
      f"Prepare it with TFDS's ucf101 builder (needs the ffmpeg binary; downloads "
      f"UCF101_videos.zip, ~6.5 GB, and the split lists):\n"
      f"  tfds build ucf101 --config={config} --data_dir={data_dir} "
      f"--file_format=array_record\n"
      f"A copy prepared as TFRecord converts in place with:\n"
      f"  tfds convert_format --dataset_version_dir={dataset_dir(name, data_dir)} "
      f"--out_file_format=array_record\n"
      f"Until then use configs/mgtc_tiny.py on synthetic_movi.")


def load_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Read-only builder for a prepared UCF101 dataset.

  Args:
    name: e.g. 'ucf101/ucf101_1'.
    data_dir: directory (local or gs://) holding `ucf101/<config>/2.0.0`; None = the
      TFDS default data dir.

  Returns:
    The builder, checked to hold ArrayRecord files.

  Raises:
    FileNotFoundError: the dataset is not there; the message says how to prepare it.
    ValueError: the dataset is stored only as TFRecord.
  """
  data_dir = data_dir or tfds.core.constants.DATA_DIR
  return prepared.open_array_record_builder(
      dataset_dir(name, data_dir), f"UCF101 dataset {name!r} (data_dir={data_dir!r})",
      prepare_instructions(name, data_dir))


def clip_frame_indices(num_video_frames: int, num_frames: int, stride: int,
                       rng: np.random.Generator | None) -> np.ndarray:
  """Indices of the clip's frames in a video of `num_video_frames` frames.

  Args:
    num_video_frames: stored frames of the video (>= 1).
    num_frames: clip length T.
    stride: step between clip frames.
    rng: training randomness (start uniform over the full windows); None = eval (the
      window centred in the video).

  Returns:
    int [T]; indices past the last frame are clamped to it (short videos repeat their
    last frame).
  """
  span = (num_frames - 1) * stride + 1
  free = max(num_video_frames - span, 0)
  start = free // 2 if rng is None else int(rng.integers(free + 1))
  return np.minimum(start + stride * np.arange(num_frames), num_video_frames - 1)


def square_crop(height: int, width: int, rng: np.random.Generator | None
                ) -> tuple[int, int, int, int]:
  """The square of side min(H, W) as (y0, x0, side, side): random in training, else centred."""
  side = min(height, width)
  if rng is None:
    return (height - side) // 2, (width - side) // 2, side, side
  return int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1)), side, side
