r"""How far do the readout's query points move? Motion against the encoder's cell size.

A readout can only beat the never-moving point where the points move, and a head reading
tokens of one encoder cell each has to resolve motion within a cell when they move less
than a cell. This prints, for each frame of the validation clips of a readout config
(frame-0 queries, as the readouts use), the distribution of the distance in raster pixels
between each visible point and its query: mean, median, 90th percentile and the fractions
beyond 1/2, 1, 2 and 4 pixels, with the encoder cell size for scale.

  python benchmarks/point_motion.py
  python benchmarks/point_motion.py --config.data.num_frames=24

Prints one JSON object; results: docs/readout_results.md.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

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


def main(argv):
  del argv
  config = flags.FLAGS.config
  parts = [visible_displacements(batch)
           for batch in pipeline.make_eval_iterator(config.data, global_batch_size=16)]
  distance = np.concatenate([distance for distance, _ in parts])
  counted = np.concatenate([counted for _, counted in parts])
  rows = motion_table(distance, counted)
  print(json.dumps(dict(
      data=config.data.name, num_frames=config.data.num_frames,
      frame_stride=config.data.frame_stride, resolution=config.data.resolution,
      encoder_cell_px=int(np.prod(config.model.encoder_strides)),
      videos=int(distance.shape[0]),
      per_frame=[{key: round(value, 3) if isinstance(value, float) else value
                  for key, value in row.items()} for row in rows]), indent=1))


if __name__ == "__main__":
  # Defined only when this runs as a script, so tests can import the functions next to
  # modules that define --config themselves.
  config_flags.DEFINE_config_file(
      "config", "configs/moog_readout_tiny.py", "Readout config file.", lock_config=True)
  app.run(main)
