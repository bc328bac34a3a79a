r"""How far do the readout's query points move? Motion against the encoder's cell size.

A readout can only beat the never-moving point where the points move, and a head reading
tokens of one encoder cell each has to resolve motion within a cell when they move less
than a cell. This prints, for each frame of the validation clips of a readout config
(frame-0 queries, as the readouts use), the distribution of the distance in raster pixels
between each visible point and its query: mean, median, 90th percentile and the fractions
beyond 1/2, 1, 2 and 4 pixels, with the encoder cell size for scale.

  python benchmarks/point_motion.py
  python benchmarks/point_motion.py --config.data.num_frames=24

With `--baselines` it also scores the trivial predictors on the same clips: the
never-moving point (AJ, < δ, occlusion accuracy; TAP-Vid 'first' mode) and box (mean
IoU), the constant-depth map (AbsRel) and, over frames 1..T-1 at full resolution, the
per-frame mean colour and repeat-the-previous-frame (PSNR); and a classic appearance
tracker that needs no training (`patch_tracker_predictions`), which says whether the
points can be followed by what they look like at all. `--config.data.eval_split`
picks the split (`train` reads its first `num_eval_examples` videos):

  python benchmarks/point_motion.py --baselines
  python benchmarks/point_motion.py --baselines --config.data.eval_split=train \
      --config.data.num_eval_examples=200

Prints one JSON object; results: docs/data.md.
"""

import json

from absl import app
from absl import flags
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from moog import model as moog_model
from moog.readouts import task as readout_task
from videolib import metrics
from videolib.data import pipeline

THRESHOLDS_PX = (0.5, 1.0, 2.0, 4.0)


def visible_displacements(batch: dict) -> tuple[np.ndarray, np.ndarray]:
  """Per (video, track, frame): distance from the query and whether it counts.

  Args:
    batch: an eval batch with `query_points` [b, Q, 3] (t, y, x), `target_points`
      [b, Q, T, 2] (x, y), `occluded` [b, Q, T], `tracks_valid` [b, Q] and `_mask` [b].

  Returns:
    `(distance [b, Q, T] in raster pixels, counted [b, Q, T])`: counted entries are the
    visible frames of valid tracks of real (not padding) videos.
  """
  query_xy = np.asarray(batch["query_points"])[..., None, :0:-1]
  distance = np.linalg.norm(np.asarray(batch["target_points"]) - query_xy, axis=-1)
  counted = (~np.asarray(batch["occluded"], bool)
             & np.asarray(batch["tracks_valid"], bool)[..., None]
             & np.asarray(batch["_mask"], bool)[:, None, None])
  return distance, counted


def motion_table(distance: np.ndarray, counted: np.ndarray) -> list[dict]:
  """Per frame, the statistics of `distance` over the counted entries (see module doc)."""
  rows = []
  for frame in range(distance.shape[-1]):
    moved = distance[..., frame][counted[..., frame]]
    row = dict(frame=frame, visible_points=int(moved.size))
    if moved.size:
      row.update(mean_px=float(np.mean(moved)), median_px=float(np.median(moved)),
                 p90_px=float(np.percentile(moved, 90)))
      row.update({f"beyond_{threshold:g}px": float(np.mean(moved > threshold))
                  for threshold in THRESHOLDS_PX})
    rows.append(row)
  return rows


def never_moving_fraction(distance: np.ndarray, counted: np.ndarray,
                          threshold_px: float = 0.5) -> float:
  """Fraction of tracks (with a counted frame) that stay within `threshold_px` of the query
  on every counted frame."""
  has_frames = counted.any(-1)
  moved = np.where(counted, distance, 0.0).max(-1) >= threshold_px
  return float(np.mean(~moved[has_frames]))


def patch_tracker_predictions(video: np.ndarray, query_points: np.ndarray,
                              radius: int = 2, prior: float = 1e-3) -> np.ndarray:
  """Template matching on raw pixels: where each query's frame-0 patch is on every frame.

  The template is the (2r + 1)² RGB patch around the query's pixel on frame 0 (edges
  repeated); on each frame the track moves to the pixel whose patch has the least mean
  squared difference, plus `prior` x the squared distance (pixels) from its previous
  position, which breaks ties between equally good matches (flat regions) in favour of
  not moving. Always visible.

  Args:
    video: [b, T, H, W, 3] frames.
    query_points: [b, Q, 3] (t, y, x) raster pixels, all on frame 0.
    radius: patch half-width r in pixels.
    prior: weight of the squared distance from the previous position.

  Returns:
    [b, Q, T, 2] (x, y) raster pixels (pixel centres).
  """
  if np.any(np.asarray(query_points)[..., 0] != 0):
    raise ValueError("patch_tracker_predictions takes frame-0 queries only.")
  video = np.asarray(video, np.float32)
  batch, num_frames, height, width, _ = video.shape
  padded = np.pad(video, ((0, 0), (0, 0), (radius, radius), (radius, radius), (0, 0)),
                  mode="edge")
  windows = np.lib.stride_tricks.sliding_window_view(
      padded, (2 * radius + 1, 2 * radius + 1), axis=(2, 3))  # [b, T, H, W, 3, k, k]
  patches = windows.reshape(batch, num_frames, height * width, -1)
  rows = np.clip(np.floor(query_points[..., 1]).astype(int), 0, height - 1)
  cols = np.clip(np.floor(query_points[..., 2]).astype(int), 0, width - 1)
  template = np.take_along_axis(patches[:, 0], (rows * width + cols)[..., None], axis=1)
  centres_y, centres_x = np.divmod(np.arange(height * width), width)
  position = np.stack([cols, rows], -1).astype(np.float32)  # Pixel indices (x, y).
  tracks = []
  for frame in range(num_frames):
    candidates = patches[:, frame]  # [b, HW, F]
    squared = (np.sum(candidates**2, -1)[:, None] - 2 * np.einsum(
        "bqf,bpf->bqp", template, candidates) + np.sum(template**2, -1)[..., None])
    distance = ((centres_x - position[..., :1]) ** 2 + (centres_y - position[..., 1:]) ** 2)
    best = np.argmin(squared / template.shape[-1] + prior * distance, axis=-1)
    position = np.stack([centres_x[best], centres_y[best]], -1).astype(np.float32)
    tracks.append(position + 0.5)
  return np.stack(tracks, axis=2)


def trivial_baselines(batch: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """(sum, count) pairs of the trivial predictors on one eval batch (module docstring)."""
  num_frames = batch["video"].shape[1]
  mask = batch["_mask"]
  image_size = batch["video"].shape[2:4]
  static_xy, static_occluded = readout_task.static_point_predictions(
      batch["query_points"], num_frames)
  tap = metrics.tapvid_metrics(
      batch["query_points"], batch["target_points"], batch["occluded"], static_xy,
      static_occluded, image_size=image_size, query_mode="first",
      tracks_valid=batch["tracks_valid"], mask=mask)
  sums = {f"never_moving/{k}": tap[k] for k in
          ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")}
  tracked = patch_tracker_predictions(batch["video"], batch["query_points"])
  tap = metrics.tapvid_metrics(
      batch["query_points"], batch["target_points"], batch["occluded"], tracked,
      np.zeros(tracked.shape[:-1], bool), image_size=image_size, query_mode="first",
      tracks_valid=batch["tracks_valid"], mask=mask)
  sums.update({f"patch_tracker/{k}": tap[k] for k in
               ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")})
  boxes = metrics.box_tracking_metrics(
      readout_task.static_box_predictions(batch["boxes"][:, 0], num_frames), batch["boxes"],
      # Scored as the readout task scores boxes: tracks with a box on the query frame 0.
      batch["boxes_valid"] & batch["boxes_valid"][:, :1], mask=mask)
  sums["never_moving/box_miou"] = boxes["box_iou"]
  depth = metrics.depth_metrics(readout_task.constant_depth_predictions(batch["depth"]),
                                batch["depth"], mask=mask)
  sums["constant_depth/abs_rel"] = depth["abs_rel"]
  video = jnp.asarray(batch["video"], jnp.float32)
  targets = video[:, 1:]
  sums["mean_colour/psnr"] = metrics.example_masked_sum(
      moog_model.psnr_per_image(moog_model.mean_colour_prediction(targets), targets), mask)
  sums["repeat_previous_frame/psnr"] = metrics.example_masked_sum(
      moog_model.psnr_per_image(video[:, :-1], targets), mask)
  return sums


def main(argv):
  del argv
  config = flags.FLAGS.config
  parts, baselines, num_videos = [], None, 0
  for batch in pipeline.make_eval_iterator(config.data, global_batch_size=16):
    parts.append(visible_displacements(batch))
    num_videos += int(np.sum(batch["_mask"]))
    if flags.FLAGS.baselines:
      baselines = metrics.accumulate(baselines, trivial_baselines(batch))
  distance = np.concatenate([distance for distance, _ in parts])
  counted = np.concatenate([counted for _, counted in parts])
  rows = motion_table(distance, counted)
  cell_px = int(np.prod(config.model.encoder_strides))
  last = rows[-1]
  result = dict(
      data=config.data.name, split=config.data.eval_split, num_frames=config.data.num_frames,
      frame_stride=config.data.frame_stride, resolution=config.data.resolution,
      encoder_cell_px=cell_px, videos=num_videos,
      last_frame=dict(median_px=round(last["median_px"], 2),
                      p90_px=round(last["p90_px"], 2),
                      median_cells=round(last["median_px"] / cell_px, 2),
                      p90_cells=round(last["p90_px"] / cell_px, 2)),
      never_moving_track_fraction=round(never_moving_fraction(distance, counted), 3))
  if baselines is not None:
    result["baselines"] = {k: round(v, 4) for k, v in metrics.finalize(baselines).items()}
  result["per_frame"] = [{key: round(value, 3) if isinstance(value, float) else value
                          for key, value in row.items()} for row in rows]
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  # Defined only when this runs as a script, so tests can import the functions next to
  # modules that define --config themselves.
  config_flags.DEFINE_config_file(
      "config", "configs/moog_readout_tiny.py", "Readout config file.", lock_config=True)
  flags.DEFINE_bool("baselines", False, "Also score the trivial predictors (module doc).")
  app.run(main)
