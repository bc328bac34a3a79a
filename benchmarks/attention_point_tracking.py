r"""Do a backbone's tokens follow the points? A parameter-free point tracker.

MooG's claim is that its state tokens move with the content they represent.
`moog.token_tracking.attention_point_tracks` tests that with no trained head: each
frame-0 query is assigned to the state tokens by their maps at its position on a
reference frame, and moves with those tokens' map centroids from then on. Two maps say
where a token is (`--maps`):

* `corrector` (default): where the token looks, its corrector cross-attention over the
  encoder grid;
* `decoder`: which pixels the token renders, the decoder's cross-attention while
  decoding the predicted state of each frame (per pixel it sums to 1 over the tokens).

`--reference_frame=1` by default: frame 0's correction starts from the random initial
tokens, and the centroids jump between frames 0 and 1 by more than the points move (the
decoder's frame-0 prediction comes from those tokens alone). The predictions are scored
with the TAP-Vid `first`-mode metrics, every point predicted visible (so AJ is
comparable with the never-moving point's), on the validation clips of
`configs/moog_readout_tiny.py`, next to the never-moving point. It also prints how far,
per frame, the tracker moves the points from their query position and how far the
visible points really moved (raster pixels).

  python benchmarks/attention_point_tracking.py --workdir=runs/moog_tiny_long
  python benchmarks/attention_point_tracking.py --workdir=runs/moog_tiny_long --maps=decoder

Prints one JSON object; results: docs/results.md (the MooG vs Grid table).
"""

import json

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import moog_readout_tiny
from moog import token_tracking
from moog import visualize
from moog.readouts import task as readout_task
from videolib import metrics as metrics_lib
from videolib.data import pipeline

# `--workdir` (the pretraining run: MooG, Grid or Grid Rec.) is defined by moog.visualize,
# whose checkpoint reading and model run this script reuses.
_MAPS = flags.DEFINE_enum("maps", "corrector", ["corrector", "decoder"],
                          "Token maps the points move with (see the module docstring).")
_REFERENCE_FRAME = flags.DEFINE_integer("reference_frame", 1,
                                        "Frame whose maps assign queries to tokens.")
_POWER = flags.DEFINE_float("power", 1.0, "Sharpening of the query-to-token weights.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Validation videos per forward pass.")
_DATA_NAME = flags.DEFINE_string(
    "data_name", None, "Dataset to score on; default: configs/moog_readout_tiny.py's.")


def main(argv):
  del argv
  data_config = moog_readout_tiny.get_config().data
  if _DATA_NAME.value:
    data_config.name = _DATA_NAME.value
  run_config, params, source = visualize.restore_run(flags.FLAGS.workdir)
  totals = {}
  moved = {"tracked": [], "true": []}  # Per video: mean displacement from the query, per frame.
  for batch in pipeline.make_eval_iterator(data_config, global_batch_size=_BATCH_SIZE.value):
    video = np.asarray(batch["video"], np.float32)
    frame_shape = video.shape[2:4]
    run = visualize.run_model(run_config, params, source, video,
                              decoder_maps=_MAPS.value == "decoder")
    maps = run.corrector_maps if _MAPS.value == "corrector" else run.decoder_maps
    query_yx = jnp.asarray(batch["query_points"][..., 1:], jnp.float32)
    tracked = token_tracking.attention_point_tracks(
        maps, frame_shape, query_yx,
        reference_frame=_REFERENCE_FRAME.value, power=_POWER.value)
    never_moving, _ = readout_task.static_point_predictions(batch["query_points"],
                                                            video.shape[1])
    counted = (np.asarray(batch["tracks_valid"], bool) & np.asarray(batch["_mask"], bool)[:, None])
    visible = counted[..., None] & ~np.asarray(batch["occluded"], bool)
    for name, points, weight in (("tracked", tracked, counted[..., None]),
                                 ("true", batch["target_points"], visible)):
      distance = np.linalg.norm(np.asarray(points) - np.asarray(never_moving), axis=-1)
      weight = np.broadcast_to(weight, distance.shape)
      moved[name].append((np.sum(distance * weight, axis=1), np.sum(weight, axis=1)))
    for name, predicted in (("attention_tracks", tracked), ("never_moving", never_moving)):
      sums = metrics_lib.tapvid_metrics(
          batch["query_points"], batch["target_points"], batch["occluded"], predicted,
          jnp.zeros(predicted.shape[:-1], bool), image_size=frame_shape, query_mode="first",
          tracks_valid=batch["tracks_valid"], mask=batch["_mask"])
      totals[name] = sums if name not in totals else jax.tree.map(
          lambda a, b: a + b, totals[name], sums)
  result = dict(workdir=flags.FLAGS.workdir, checkpoint=source, maps=_MAPS.value,
                reference_frame=_REFERENCE_FRAME.value, power=_POWER.value)
  for name, sums in totals.items():
    finalized = metrics_lib.finalize(sums)
    result[name] = {key: float(finalized[key]) for key in (
        "average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")}
  for name, parts in moved.items():
    distance_sum = sum(np.sum(total, axis=0) for total, _ in parts)
    count = sum(np.sum(weight, axis=0) for _, weight in parts)
    result[f"mean_{name}_displacement_px_per_frame"] = [
        round(float(value), 3) for value in distance_sum / np.maximum(count, 1)]
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
