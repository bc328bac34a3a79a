"""Helpers of the readout notebook (`colabs/moog_readouts.ipynb`): train, load, predict, plot.

The notebook stays a sequence of short cells; everything longer than a few lines lives
here, tested in `tests/test_notebook_utils.py`:

* `quiet_logging`: absl errors only, no TFDS progress bars.
* `train_quick_runs`: a tiny MooG, then tiny readouts on it, on the built-in synthetic data,
  through the project's trainer (`videolib.train.train_and_evaluate`) and configs
  (`configs/moog_tiny.py`, `configs/moog_readout_tiny.py`) with fewer steps.
* `load_run`, `load_readout_task`, `backbone_matches`: a run's newest checkpoint on one
  device (`videolib.checkpoint.read_run_params`), whatever it was trained on.
* `validation_batch`, `predict`: validation videos and the three readouts' per-frame
  outputs (`moog.readouts.task.ReadoutTask.run`, the evaluation's code path).
* `readout_metrics`, `metrics_table`: the task's own evaluation (`ReadoutTask.eval_fn`:
  TAP-Vid, depth and box metrics from `videolib.metrics` next to the trivial baselines),
  finalised and laid out as readout-vs-baseline rows.
* `plot_point_tracks`, `plot_boxes`, `plot_depth`, `plot_readouts`: ground truth next to
  predictions on a few frames of one video (matplotlib).
* `ego4d_clip`, `ego4d_predict`, `plot_ego4d`: the released Ego4D backbone and heads
  (`moog/released/ego4d.py`) on one clip (a validation video or a video file), drawn with the
  ground truth when the clip has it.

Coordinates: point tracks are (x, y) raster pixels (pixel p covers [p, p + 1)), boxes are
normalised [ymin, xmin, ymax, xmax]; frames are drawn with `extent=(0, W, H, 0)` so raster
pixels are plot coordinates.
"""

import dataclasses
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.figure
import matplotlib.patches
import ml_collections
import numpy as np
from absl import logging as absl_logging

from configs import moog_readout_tiny
from configs import moog_tiny
from moog import task as moog_task
from moog import visualize
from moog.readouts import heads
from moog.readouts import task as readout_task
from moog.released import ego4d
from videolib import metrics as metrics_lib
from videolib import train
from videolib.data import pipeline

# Small split of the MooG benchmark for the quick runs: rendered in seconds on first use.
QUICK_DATASET = 'synthetic_movi/32x32_8f_objects_train512_val32'

# (row label, metric key of the readout, metric key of its trivial baseline, baseline name).
METRIC_ROWS = (
    ('points (first) AJ', 'points_first/average_jaccard',
     'static_points_first/average_jaccard', 'never-moving point'),
    ('points (first) <δ avg', 'points_first/average_pts_within_thresh',
     'static_points_first/average_pts_within_thresh', 'never-moving point'),
    ('points (first) OA', 'points_first/occlusion_accuracy',
     'static_points_first/occlusion_accuracy', 'never-moving point'),
    ('points (strided) AJ', 'points_strided/average_jaccard',
     'static_points_strided/average_jaccard', 'never-moving point'),
    ('points (strided) <δ avg', 'points_strided/average_pts_within_thresh',
     'static_points_strided/average_pts_within_thresh', 'never-moving point'),
    ('points (strided) OA', 'points_strided/occlusion_accuracy',
     'static_points_strided/occlusion_accuracy', 'never-moving point'),
    ('depth AbsRel (lower is better)', 'depth/abs_rel', 'constant_depth/abs_rel',
     'constant depth'),
    ('depth δ<1.25', 'depth/delta_1.25', 'constant_depth/delta_1.25', 'constant depth'),
    ('boxes mIoU', 'boxes/box_iou', 'static_boxes/box_iou', 'never-moving box'),
)


def quiet_logging() -> None:
  """Keeps a notebook's output to what its cells show: absl errors only, no TFDS bars.

  The trainer's own progress bar (tqdm) stays.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.ERROR)
  tfds.disable_progress_bar()


# ----------------------------------------------------------------------------------------
# Quick training.
# ----------------------------------------------------------------------------------------


def _set_cadence(config: ml_collections.ConfigDict, num_steps: int) -> None:
  """Train `num_steps` steps; evaluate and checkpoint once, at the end."""
  config.num_train_steps = num_steps
  config.eval_every_steps = num_steps
  config.checkpoint_every_steps = num_steps
  config.log_every_steps = max(1, min(config.log_every_steps, num_steps // 4))
  config.optimizer.warmup_steps = max(1, min(config.optimizer.warmup_steps, num_steps // 5))


def quick_pretrain_config(num_steps: int, *, dataset: str = QUICK_DATASET,
                          data_dir: str | None = None,
                          num_eval_videos: int = 16) -> ml_collections.ConfigDict:
  """`configs/moog_tiny.py` for `num_steps` steps on a small synthetic split."""
  config = moog_tiny.get_config()
  config.data.update(name=dataset, data_dir=data_dir or None,
                     num_eval_examples=num_eval_videos)
  config.num_summary_videos = 1
  _set_cadence(config, num_steps)
  return config


def quick_readout_config(num_steps: int, pretrained_workdir: str, *,
                         dataset: str = QUICK_DATASET, data_dir: str | None = None,
                         num_eval_videos: int = 16) -> ml_collections.ConfigDict:
  """`configs/moog_readout_tiny.py` on `pretrained_workdir` for `num_steps` steps."""
  config = moog_readout_tiny.get_config()
  config.init_from = pretrained_workdir
  config.data.update(name=dataset, data_dir=data_dir or None,
                     num_eval_examples=num_eval_videos)
  _set_cadence(config, num_steps)
  return config


def train_quick_runs(root: str, *, pretrain_steps: int, readout_steps: int,
                     pretrained_workdir: str | None = None, dataset: str = QUICK_DATASET,
                     data_dir: str | None = None,
                     num_eval_videos: int = 16) -> tuple[str, str]:
  """Trains a tiny MooG, then tiny readouts on it; returns their workdirs.

  Both go through `videolib.train.train_and_evaluate`, as `python -m moog.main` runs
  `configs/moog_tiny.py` and `configs/moog_readout_tiny.py`, with fewer steps and a
  small synthetic split (rendered into `data_dir`, default the TFDS data dir, on first
  use). Re-running with the same `root` resumes (or skips) finished runs.

  Args:
    root: directory for the workdirs, `root/moog` and `root/readouts`.
    pretrain_steps: MooG pretraining steps.
    readout_steps: readout training steps (backbone frozen).
    pretrained_workdir: an existing `configs/moog_tiny.py` MooG run to read out instead
      of pretraining one (a run of another `config.model` is refused, naming the fields).
    dataset: the `synthetic_movi/...` config both train and evaluate on.
    data_dir: TFDS data directory; None = the TFDS default.
    num_eval_videos: validation videos of the end-of-training evaluations.

  Returns:
    `(moog_workdir, readout_workdir)`.
  """
  moog_workdir = pretrained_workdir or os.path.join(root, 'moog')
  readout_workdir = os.path.join(root, 'readouts')
  if not pretrained_workdir:
    config = quick_pretrain_config(pretrain_steps, dataset=dataset, data_dir=data_dir,
                                   num_eval_videos=num_eval_videos)
    train.train_and_evaluate(config, moog_workdir,
                             moog_task.MooGTask(config))
  config = quick_readout_config(readout_steps, moog_workdir, dataset=dataset,
                                data_dir=data_dir, num_eval_videos=num_eval_videos)
  train.train_and_evaluate(config, readout_workdir, readout_task.ReadoutTask(config))
  return moog_workdir, readout_workdir


# ----------------------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
  """A run's newest checkpoint: its config, parameters (host arrays) and location."""
  config: ml_collections.ConfigDict
  params: dict
  source: str


def load_run(workdir: str) -> Run:
  """The newest checkpoint of `workdir`, on one device, with the config it was saved with."""
  return Run(*visualize.restore_run(workdir))


def load_readout_task(run: Run) -> readout_task.ReadoutTask:
  """The readout task of a readout run (its heads, backbone kind and protocol)."""
  if run.config.get('task') != 'readout':
    raise ValueError(f'{run.source} is not a readout run (config.task='
                     f'{run.config.get("task")!r}); pass a readout workdir.')
  return readout_task.ReadoutTask(run.config)


def backbone_matches(pretrained: Run, readout: Run) -> bool:
  """Whether the readout run's backbone parameters equal the pretraining run's, bitwise.

  The pretraining run's parameters are the backbone, all of them (`initial_tokens`
  included when learned).
  """
  for part in pretrained.params:
    left, right = pretrained.params.get(part), readout.params.get(part)
    if left is None or right is None:
      return False
    if jax.tree.structure(left) != jax.tree.structure(right):
      return False
    if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(left),
                                                    jax.tree.leaves(right))):
      return False
  return True


# ----------------------------------------------------------------------------------------
# Data, predictions, metrics.
# ----------------------------------------------------------------------------------------


def validation_batch(config: ml_collections.ConfigDict, num_videos: int,
                     num_frames: int | None = None) -> dict[str, np.ndarray]:
  """The first `num_videos` validation videos of the run's dataset, as one batch.

  Args:
    config: the readout run's config (its `data` section).
    num_videos: videos in the batch (fewer if the split is smaller; see `_mask`).
    num_frames: clip length; None = the run's `data.num_frames`. Longer clips than the
      training window are fine (the readouts are recurrent) up to the stored length.

  Returns:
    The eval pipeline's batch (`video`, `depth`, `boxes`, tracks, `_mask`), [num_videos,
    ...] numpy arrays.
  """
  data_config = pipeline.completed_config(config.data)
  data_config.num_eval_examples = num_videos
  if num_frames is not None:
    data_config.num_frames = num_frames
  return next(iter(pipeline.make_eval_iterator(
      data_config, global_batch_size=num_videos, process_index=0, process_count=1)))


def _single_device(tree):
  device = jax.local_devices()[0]
  return jax.tree.map(lambda x: jax.device_put(x, device), tree)


def predict(task: readout_task.ReadoutTask, params: dict, batch: dict[str, np.ndarray],
            seed: int = 0) -> dict[str, np.ndarray]:
  """Point, box and depth readouts on every frame of the batch's videos.

  Runs `ReadoutTask.run`, the evaluation's forward pass (queries on frame 0, boxes
  conditioned on their frame-0 box, slices of `readout.eval_slice_frames` frames).

  Returns:
    'points' [B, N, T, 2] (x, y) raster pixels, 'visible' [B, N, T] bool, 'boxes'
    [B, T, K, 4] normalised, 'depth' [B, T, H, W, 1] metric depth; only the heads the
    run trained.
  """
  image_size = tuple(batch['video'].shape[2:4])
  params, device_batch = _single_device(params), _single_device(
      {k: v for k, v in batch.items() if k != '_mask'})

  @jax.jit
  def forward(params, batch, rng):
    queries = heads.normalise_query_points(batch['query_points'], image_size) if (
        'query_points' in batch) else None
    return task.run(params, batch, rng, point_queries=queries,
                    slice_frames=task.readout_config.eval_slice_frames)

  outputs = jax.device_get(forward(params, device_batch, jax.random.key(seed)))
  result = {}
  if 'position' in outputs:
    result['points'] = np.asarray(heads.positions_to_pixels(
        jnp.swapaxes(outputs['position'], 1, 2), image_size))
    result['visible'] = np.swapaxes(outputs['visible'], 1, 2)
  if 'boxes' in outputs:
    result['boxes'] = np.asarray(outputs['boxes'])
  if 'log_depth' in outputs:
    result['depth'] = np.asarray(heads.log_depth_to_depth(outputs['log_depth']))
  return result


def readout_metrics(task: readout_task.ReadoutTask, params: dict,
                    batch: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
  """The task's evaluation on `batch` (readouts and trivial baselines), finalised.

  Exactly `ReadoutTask.eval_fn` (metrics from `videolib.metrics`), as `--mode=eval`
  computes it, then `videolib.metrics.finalize`.
  """
  params, device_batch = _single_device(params), _single_device(batch)
  sums = jax.jit(task.eval_fn)(params, device_batch, jax.random.key(seed))
  return metrics_lib.finalize(jax.device_get(sums))


def metrics_table(metrics: dict[str, float]) -> list[tuple[str, float, float, str]]:
  """`METRIC_ROWS` present in `metrics`: (name, readout value, baseline value, baseline)."""
  return [(name, metrics[key], metrics.get(baseline_key, float('nan')), baseline)
          for name, key, baseline_key, baseline in METRIC_ROWS if key in metrics]


def format_metrics_table(rows: Sequence[tuple[str, float, float, str]]) -> str:
  """Plain-text table of `metrics_table` rows."""
  width = max([len(r[0]) for r in rows] + [6])
  lines = [f'{"metric":<{width}}  {"readout":>8}  {"baseline":>8}  trivial baseline']
  lines += [f'{name:<{width}}  {value:8.3f}  {base:8.3f}  {baseline}'
            for name, value, base, baseline in rows]
  return '\n'.join(lines)


# ----------------------------------------------------------------------------------------
# Plots.
# ----------------------------------------------------------------------------------------


def default_frames(num_frames: int, count: int = 4) -> list[int]:
  """`count` evenly spaced frame indices from the first to the last frame."""
  return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, min(count,
                                                                           num_frames))})


def track_colours(count: int) -> np.ndarray:
  """[count, 4] RGBA colours, one per track."""
  return matplotlib.colormaps['hsv'](np.linspace(0.0, 1.0, count, endpoint=False))


def _show_frame(ax, frame: np.ndarray, title: str | None = None) -> None:
  height, width = frame.shape[:2]
  ax.imshow(np.clip(frame, 0.0, 1.0), extent=(0, width, height, 0), interpolation='nearest')
  ax.set_xlim(0, width)
  ax.set_ylim(height, 0)
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=8)


def _label_grid(axes: np.ndarray, frames: Sequence[int], row_labels: Sequence[str]) -> None:
  """Frame numbers above the top row, a label left of each row."""
  for column, t in enumerate(frames):
    axes[0, column].set_title(f'frame {t}', fontsize=8)
  for row, label in enumerate(row_labels):
    axes[row, 0].set_ylabel(label, fontsize=8)


def draw_point_tracks(ax, frame: np.ndarray, points: np.ndarray, visible: np.ndarray,
                      t: int, colours: np.ndarray, title: str | None = None) -> None:
  """Frame `t` with each track's trail over frames 0..t and its position at `t`.

  Args:
    ax: matplotlib axes.
    frame: [H, W, 3] float frame in [0, 1].
    points: [N, T, 2] (x, y) raster pixels.
    visible: [N, T] bool; a track not visible at `t` is drawn as a hollow circle.
    t: the frame index.
    colours: [N, 4] one colour per track.
    title: optional axes title.
  """
  _show_frame(ax, frame, title)
  for track in range(points.shape[0]):
    trail = points[track, :t + 1]
    ax.plot(trail[:, 0], trail[:, 1], '-', color=colours[track], linewidth=0.8)
    ax.scatter(points[track, t, 0], points[track, t, 1], s=14,
               facecolors=colours[track] if visible[track, t] else 'none',
               edgecolors=colours[track], linewidths=0.8)


def draw_boxes(ax, frame: np.ndarray, boxes: np.ndarray, valid: np.ndarray,
               colours: np.ndarray, title: str | None = None) -> None:
  """A frame with its boxes ([K, 4] normalised [ymin, xmin, ymax, xmax]) where `valid`."""
  _show_frame(ax, frame, title)
  height, width = frame.shape[:2]
  for k in np.flatnonzero(valid):
    ymin, xmin, ymax, xmax = boxes[k] * np.array([height, width, height, width])
    ax.add_patch(matplotlib.patches.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin,
                                              fill=False, edgecolor=colours[k], linewidth=1.2))


def _figure(rows: int, columns: int, scale: float = 1.6) -> matplotlib.figure.Figure:
  # `Figure`, not `pyplot.figure`: no global state, and nothing is shown twice in Jupyter.
  figure = matplotlib.figure.Figure(figsize=(scale * columns, scale * rows + 0.4),
                                    layout='constrained')
  figure.subplots(rows, columns, squeeze=False)
  return figure


def plot_point_tracks(batch, predictions, video: int = 0,
                      frames: Sequence[int] | None = None) -> matplotlib.figure.Figure:
  """Ground-truth (top row) vs predicted (bottom row) point tracks of one video.

  Only real tracks (`tracks_valid`) are drawn; hollow circles are occluded points.
  """
  num_frames = batch['video'].shape[1]
  frames = list(frames) if frames is not None else default_frames(num_frames)
  valid = batch['tracks_valid'][video]
  colours = track_colours(int(valid.sum()))
  gt_points, gt_visible = batch['target_points'][video][valid], ~batch['occluded'][video][valid]
  pred_points = predictions['points'][video][valid]
  pred_visible = predictions['visible'][video][valid]
  figure = _figure(2, len(frames))
  axes = np.asarray(figure.axes).reshape(2, len(frames))
  for column, t in enumerate(frames):
    frame = batch['video'][video, t]
    draw_point_tracks(axes[0, column], frame, gt_points, gt_visible, t, colours)
    draw_point_tracks(axes[1, column], frame, pred_points, pred_visible, t, colours)
  _label_grid(axes, frames, ('ground truth', 'predicted'))
  figure.suptitle(f'Point tracks (queries on frame 0), video {video}', fontsize=9)
  return figure


def plot_boxes(batch, predictions, video: int = 0,
               frames: Sequence[int] | None = None) -> matplotlib.figure.Figure:
  """Ground-truth (top row) vs predicted (bottom row) boxes of one video.

  Predicted boxes are drawn for the tracks that have a frame-0 box (the readout's
  conditioning), on the frames where the ground-truth box exists.
  """
  num_frames = batch['video'].shape[1]
  frames = list(frames) if frames is not None else default_frames(num_frames)
  gt_valid = batch['boxes_valid'][video]
  scored = gt_valid & gt_valid[:1]
  colours = track_colours(gt_valid.shape[-1])
  figure = _figure(2, len(frames))
  axes = np.asarray(figure.axes).reshape(2, len(frames))
  for column, t in enumerate(frames):
    frame = batch['video'][video, t]
    draw_boxes(axes[0, column], frame, batch['boxes'][video, t], gt_valid[t], colours)
    draw_boxes(axes[1, column], frame, predictions['boxes'][video, t], scored[t], colours)
  _label_grid(axes, frames, ('ground truth', 'predicted'))
  figure.suptitle(f'Boxes (conditioned on frame 0), video {video}', fontsize=9)
  return figure


def plot_depth(batch, predictions, video: int = 0,
               frames: Sequence[int] | None = None) -> matplotlib.figure.Figure:
  """Frames (top), ground-truth depth (middle) and predicted depth (bottom) of one video.

  Both depth rows share one colour scale (the ground truth's range over the shown frames).
  """
  num_frames = batch['video'].shape[1]
  frames = list(frames) if frames is not None else default_frames(num_frames)
  gt = batch['depth'][video, frames, ..., 0]
  pred = predictions['depth'][video, frames, ..., 0]
  low, high = float(np.min(gt)), float(np.max(gt))
  figure = _figure(3, len(frames))
  axes = np.asarray(figure.axes).reshape(3, len(frames))
  image = None
  for column, t in enumerate(frames):
    _show_frame(axes[0, column], batch['video'][video, t])
    for row, depth in enumerate((gt, pred), 1):
      ax = axes[row, column]
      image = ax.imshow(depth[column], vmin=low, vmax=high, cmap='viridis_r',
                        interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
  _label_grid(axes, frames, ('video', 'ground-truth depth', 'predicted depth'))
  figure.colorbar(image, ax=axes[1:].ravel().tolist(), shrink=0.8, label='depth')
  figure.suptitle(f'Depth, video {video}', fontsize=9)
  return figure


def plot_readouts(batch, predictions, video: int = 0,
                  frames: Sequence[int] | None = None) -> list[matplotlib.figure.Figure]:
  """The three comparison figures of one video (for the heads the run has)."""
  figures = []
  if 'points' in predictions:
    figures.append(plot_point_tracks(batch, predictions, video, frames))
  if 'boxes' in predictions:
    figures.append(plot_boxes(batch, predictions, video, frames))
  if 'depth' in predictions:
    figures.append(plot_depth(batch, predictions, video, frames))
  return figures


# ----------------------------------------------------------------------------------------
# Released Ego4D weights.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Ego4DClip:
  """One clip prepared for `moog.released.ego4d.run_released`, with its ground truth if any.

  Attributes:
    video: [1, T, R, R, 3] float32 in [0, 1].
    query_xy: [1, N, 2] frame-0 point queries, (x, y) / (W, H) in [0, 1].
    query_boxes: [1, K, 4] frame-0 boxes, normalised (ymin, xmin, ymax, xmax).
    source: where the clip came from.
    target_points: [N, T, 2] ground-truth (x, y) raster pixels of the R x R clip, or None.
    target_visible: [N, T] bool, or None.
    boxes: [T, K, 4] ground-truth normalised boxes, or None.
    boxes_valid: [T, K] bool, or None.
  """
  video: np.ndarray
  query_xy: np.ndarray
  query_boxes: np.ndarray
  source: str
  target_points: np.ndarray | None = None
  target_visible: np.ndarray | None = None
  boxes: np.ndarray | None = None
  boxes_valid: np.ndarray | None = None


def _read_video_file(path: str) -> np.ndarray:
  """[T, H, W, 3] from `.npy` (numpy) or any video format (mediapy; needs ffmpeg)."""
  if path.endswith('.npy'):
    video = np.load(path, allow_pickle=False)
  else:
    import mediapy  # pylint: disable=g-import-not-at-top
    video = np.asarray(mediapy.read_video(path))
  if video.ndim == 5 and video.shape[0] == 1:
    video = video[0]
  return video


def grid_queries(count: int) -> np.ndarray:
  """[count², 2] (x, y) in [0, 1]: the centres of a count x count grid of cells."""
  centres = (np.arange(count) + 0.5) / count
  x, y = np.meshgrid(centres, centres, indexing='xy')
  return np.stack([x.ravel(), y.ravel()], axis=-1).astype(np.float32)


def ego4d_clip(config: ml_collections.ConfigDict, *, video_path: str = '',
               batch: dict[str, np.ndarray] | None = None, video: int = 0,
               query_grid: int = 6,
               default_box: Sequence[float] = (0.25, 0.25, 0.75, 0.75)) -> Ego4DClip:
  """A clip of `config.num_frames` frames at `config.resolution`², with frame-0 queries.

  From `video_path` (a `.npy` [T, H, W, 3] array or a video file read by mediapy): the
  first frames, resized; point queries on a `query_grid` x `query_grid` grid and one
  `default_box`. Otherwise video `video` of `batch` (a `validation_batch`): its tracks
  whose query is on frame 0 (as the colab) and its boxes present on frame 0, with their
  ground truth.

  Args:
    config: `moog.released.ego4d` sizes (`num_frames`, `resolution`).
    video_path: a video file; '' = use `batch`.
    batch: a validation batch (`video`, tracks and boxes).
    video: which video of the batch.
    query_grid: grid size of the point queries of a video file.
    default_box: the box query of a video file.
  """
  if video_path:
    clip = ego4d.prepare_clip(_read_video_file(video_path), config)
    return Ego4DClip(video=clip[None], query_xy=grid_queries(query_grid)[None],
                     query_boxes=np.asarray([[default_box]], np.float32), source=video_path)
  if batch is None:
    raise ValueError('Give a video_path or a validation batch.')
  frames = batch['video'][video]
  height, width = frames.shape[1:3]
  clip = ego4d.prepare_clip(frames, config)
  num_frames, size = config.num_frames, config.resolution
  # Without frame-0 tracks / boxes: the grid queries and default box of a video file.
  result = Ego4DClip(video=clip[None], query_xy=grid_queries(query_grid)[None],
                     query_boxes=np.asarray([[default_box]], np.float32),
                     source=f'validation video {video}')
  keep = (batch['tracks_valid'][video] & (np.round(batch['query_points'][video, :, 0]) == 0)
          if 'query_points' in batch else np.zeros(0, bool))
  if keep.any():
    query_xy, _ = heads.normalise_query_points(batch['query_points'][video][keep],
                                                  (height, width))
    result.query_xy = np.asarray(query_xy, np.float32)[None]
    scale = np.asarray([size / width, size / height], np.float32)
    result.target_points = batch['target_points'][video][keep][:, :num_frames] * scale
    result.target_visible = ~batch['occluded'][video][keep][:, :num_frames]
  keep = batch['boxes_valid'][video, 0] if 'boxes' in batch else np.zeros(0, bool)
  if keep.any():
    result.query_boxes = batch['boxes'][video, 0][keep].astype(np.float32)[None]
    result.boxes = batch['boxes'][video][:num_frames][:, keep]
    result.boxes_valid = batch['boxes_valid'][video][:num_frames][:, keep]
  return result


def ego4d_validation_batch(dataset: str, num_frames: int,
                           data_dir: str | None = None) -> dict[str, np.ndarray]:
  """The first validation video of `dataset` at its stored size, with tracks and boxes.

  For the released heads, which read `num_frames`-frame clips (16), longer than the
  quick runs' clips. `dataset` is any name of the input pipeline with tracks and boxes
  (e.g. a `synthetic_movi/...` split with 16 or more frames, rendered on first use).
  """
  data_config = pipeline.default_data_config()
  data_config.update(name=dataset, data_dir=data_dir or None, random_crop=False,
                     features=('video', 'boxes', 'tracks'))
  stored = pipeline._stored_info(data_config)  # pylint: disable=protected-access
  if stored.height and stored.width:
    data_config.resolution = min(stored.height, stored.width)
  data_config.num_frames = num_frames
  data_config.num_eval_examples = 1
  return next(iter(pipeline.make_eval_iterator(
      data_config, global_batch_size=1, process_index=0, process_count=1)))


def ego4d_predict(params: dict, clip: Ego4DClip, config: ml_collections.ConfigDict,
                  seed: int = 0) -> dict[str, np.ndarray]:
  """`moog.released.ego4d.run_released` on the clip, for the heads in `params`.

  Returns (first video of the batch): 'points' [N, T, 2] (x, y) raster pixels of the
  clip, 'visible' [N, T] bool, 'boxes' [T, K, 4] normalised, 'features' [T, n, d].
  """
  query_xy = clip.query_xy if 'point_head' in params and clip.query_xy.shape[1] else None
  query_boxes = (clip.query_boxes if 'box_head' in params and clip.query_boxes.shape[1]
                 else None)
  out = ego4d.run_released(params, clip.video, query_xy, query_boxes, config=config,
                           seed=seed)
  result = {'features': out['features'][0]}
  if 'position' in out:
    size = clip.video.shape[2:4]
    result['points'] = np.asarray(heads.positions_to_pixels(out['position'][0], size))
    result['visible'] = out['visible'][0]
  if 'boxes' in out:
    result['boxes'] = out['boxes'][0]
  return result


def plot_ego4d(clip: Ego4DClip, predictions: dict[str, np.ndarray],
               frames: Sequence[int] | None = None) -> matplotlib.figure.Figure:
  """Predicted point tracks and boxes on a few frames, under the ground truth if known."""
  video = clip.video[0]
  frames = list(frames) if frames is not None else default_frames(video.shape[0])
  rows = []  # (label, draw(ax, t)).
  if 'points' in predictions:
    colours = track_colours(predictions['points'].shape[0])
    if clip.target_points is not None:
      rows.append(('ground-truth points', lambda ax, t: draw_point_tracks(
          ax, video[t], clip.target_points, clip.target_visible, t, colours)))
    rows.append(('predicted points', lambda ax, t: draw_point_tracks(
        ax, video[t], predictions['points'], predictions['visible'], t, colours)))
  if 'boxes' in predictions:
    count = predictions['boxes'].shape[1]
    colours_boxes = track_colours(count)
    if clip.boxes is not None:
      rows.append(('ground-truth boxes', lambda ax, t: draw_boxes(
          ax, video[t], clip.boxes[t], clip.boxes_valid[t], colours_boxes)))
    rows.append(('predicted boxes', lambda ax, t: draw_boxes(
        ax, video[t], predictions['boxes'][t], np.ones(count, bool), colours_boxes)))
  if not rows:
    raise ValueError('No point or box predictions to plot.')
  figure = _figure(len(rows), len(frames))
  axes = np.asarray(figure.axes).reshape(len(rows), len(frames))
  for row, (_, draw) in enumerate(rows):
    for column, t in enumerate(frames):
      draw(axes[row, column], t)
  _label_grid(axes, frames, [label for label, _ in rows])
  figure.suptitle(f'Released Ego4D heads, {clip.source} (queries on frame 0)', fontsize=9)
  return figure
