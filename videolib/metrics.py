"""Jittable, mask-weighted evaluation metrics as (sum, count) pairs.

Every metric function returns `{name: (sum, count)}` with float32 scalars. Sums and counts
from several batches, devices or hosts are added with `accumulate` and turned into numbers
with `finalize` (sum / count). Because every value is a sum over a well-defined unit
(video, pixel, box entry, example) and padding contributes zero to both sum and count, a
padded last eval batch (`_mask=False` examples) and any split of the data into batches give
the numbers of one pass over the unpadded split (counts exactly, sums up to float32
summation order).

Averaging units (docs/evaluation_reference.md §1–§4):

* TAP-Vid: the video. Each metric is a ratio of sums over one video's tracks x frames, then
  a plain mean over videos (tapnet, kauldron).
* Depth: the valid pixel, pooled over the whole split (kauldron). With MOVi's all-ones
  depth mask and one resolution per split this equals per-frame and per-video averaging.
* Boxes: the valid (video, track, frame) entry after the query frame (global mean IoU).
* Classification: the example; multi-view scores are averaged before scoring.

NaN policy: no function here returns NaN because of masks or padding contents (padding may
hold NaN or inf). A TAP-Vid video is scored exactly as tapnet's `compute_tapvid_metrics`
scores it, except that where tapnet's per-video ratio is 0/0 (NaN in tapnet) the video is
left out of that metric's mean (count 0): a video with no visible scored ground truth has
Jaccard TP / (0 + FP) = 0 when the prediction says visible anywhere and is counted, and
is left out only when the prediction is occluded everywhere too (0/0). The videos without
any visible scored entry are reported. `finalize` returns NaN only for a metric whose total
count over everything accumulated is zero, i.e. a metric that is undefined for the split.
"""

from collections.abc import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

MetricSums = dict[str, tuple[jax.Array, jax.Array]]

TAPVID_THRESHOLDS = (1, 2, 4, 8, 16)
TAPVID_RESOLUTION = (256, 256)
QUERY_MODES = ('strided', 'first')


def _example_weight(mask: jax.Array | None, batch_size: int) -> jax.Array:
  """Float32 per-example weights [B] from the optional `_mask`."""
  if mask is None:
    return jnp.ones((batch_size,), jnp.float32)
  chex.assert_shape(mask, (batch_size,))
  return mask.astype(jnp.float32)


def _pair(total: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.asarray(total, jnp.float32), jnp.asarray(count, jnp.float32)


def accumulate(total: MetricSums | None, new: MetricSums) -> MetricSums:
  """Adds the (sum, count) pairs of `new` to `total` (None starts a new total)."""
  if total is None:
    return dict(new)
  if total.keys() != new.keys():
    raise ValueError(f'Metric keys differ: {sorted(total)} vs {sorted(new)}.')
  return {k: (total[k][0] + new[k][0], total[k][1] + new[k][1]) for k in total}


def finalize(accumulated: Mapping[str, tuple[jax.Array, jax.Array]]) -> dict[str, float]:
  """Turns accumulated (sum, count) pairs into metric values on the host.

  A key ending in `mse` additionally yields the matching `rmse` (sqrt of the pooled MSE).

  Args:
    accumulated: {name: (sum, count)} with scalar sums and counts.

  Returns:
    {name: sum / count}; NaN where the count over everything accumulated is zero, which
    means the metric is undefined for the data seen (e.g. no scoreable video).
  """
  values = {}
  for name, (total, count) in accumulated.items():
    total, count = float(np.asarray(total)), float(np.asarray(count))
    values[name] = total / count if count > 0 else float('nan')
    if name.endswith('mse'):
      values[name[: -len('mse')] + 'rmse'] = float(np.sqrt(values[name]))
  return values


# ----------------------------------------------------------------------------------------
# TAP-Vid point tracking.
# ----------------------------------------------------------------------------------------


def convert_grid_coordinates(
    coords: jax.Array,
    input_size_xy: Sequence[int | float],
    output_size_xy: Sequence[int | float],
) -> jax.Array:
  """Rescales (x, y) raster coordinates between grids (tapnet `convert_grid_coordinates`).

  Raster convention: the image corner is 0 and pixel centres sit at +0.5, so a plain
  per-axis multiplication by output / input size maps pixel centres to pixel centres.

  Args:
    coords: [..., 2] (x, y) coordinates on the input grid.
    input_size_xy: (width, height) of the input grid.
    output_size_xy: (width, height) of the output grid.

  Returns:
    [..., 2] (x, y) coordinates on the output grid.
  """
  scale = jnp.asarray(output_size_xy, jnp.float32) / jnp.asarray(input_size_xy, jnp.float32)
  return coords * scale


def _tapvid_eval_frames(query_frame: jax.Array, num_frames: int, query_mode: str) -> jax.Array:
  """Which frames are scored for each track, [..., T] bool (docs/evaluation_reference.md §1.2)."""
  frames = jnp.arange(num_frames)
  query_frame = query_frame[..., None]
  if query_mode == 'strided':
    return frames != query_frame
  if query_mode == 'first':
    return frames > query_frame
  raise ValueError(f'query_mode must be one of {QUERY_MODES}, got {query_mode!r}.')


def _raise_on_query_frames_outside(outside: np.ndarray, num_frames: int) -> None:
  if np.any(outside):
    example, track = (int(i[0]) for i in np.nonzero(outside))
    raise ValueError(
        f'tapvid_metrics: {int(np.sum(outside))} valid track(s) have a query frame outside '
        f'the clip [0, {num_frames}), first example {example} track {track}. Shift the '
        'query frames into the clip, or mark those tracks tracks_valid=False.')


def _check_query_frames(query_frame: jax.Array, track_ok: jax.Array, num_frames: int) -> None:
  """Raises if a valid track's query frame lies outside [0, T); at run time under jit."""
  outside = track_ok & ((query_frame < 0) | (query_frame >= num_frames))
  if isinstance(outside, jax.core.Tracer):
    jax.debug.callback(_raise_on_query_frames_outside, outside, num_frames)
  else:
    _raise_on_query_frames_outside(np.asarray(outside), num_frames)


def tapvid_metrics(
    query_points: jax.Array,
    target_points: jax.Array,
    occluded: jax.Array,
    pred_points: jax.Array,
    pred_occluded: jax.Array,
    *,
    image_size: tuple[int, int],
    query_mode: str,
    tracks_valid: jax.Array | None = None,
    mask: jax.Array | None = None,
    thresholds: Sequence[int | float] = TAPVID_THRESHOLDS,
    eval_resolution: tuple[int, int] = TAPVID_RESOLUTION,
) -> MetricSums:
  """TAP-Vid metrics per video, as (sum over videos, number of videos) pairs.

  Follows tapnet `compute_tapvid_metrics`: positions are rescaled from `image_size` to the
  256 x 256 evaluation raster, `within_δ` is squared distance strictly below δ², and every
  metric is a ratio of sums over one video's tracks x scored frames.

  Exclusions (never NaN): padding examples (`mask`) and padding tracks (`tracks_valid`)
  contribute nothing. Where tapnet's ratio is 0/0 the video is left out of that metric's
  mean: a video with no scored entry is left out of `occlusion_accuracy`; a video with no
  visible scored entry is left out of `pts_within_*` and counted in
  `videos_without_visible` (finalised: fraction of scored videos), but it stays in the
  Jaccard means with Jaccard 0 whenever it predicts a point visible on a scored frame
  (TP / (GT visible + FP) = 0 / FP, as tapnet scores it).

  A valid track whose rounded query frame lies outside [0, T) is an error (ValueError, or
  at run time under jit an error raised from a host callback): its scored frames are
  undefined, and dropping it silently would change which tracks a number averages over.

  Args:
    query_points: [B, N, 3] (t, y, x); only t is used. Query frame = round(t).
    target_points: [B, N, T, 2] ground-truth (x, y) raster pixels at `image_size`.
    occluded: [B, N, T] bool ground-truth occlusion.
    pred_points: [B, N, T, 2] predicted (x, y) raster pixels at `image_size`.
    pred_occluded: [B, N, T] bool predicted occlusion.
    image_size: (height, width) of the raster the points are given in.
    query_mode: 'strided' (all frames but the query frame) or 'first' (frames after it).
    tracks_valid: optional [B, N] bool; False marks padding tracks.
    mask: optional [B] bool example mask (`_mask`).
    thresholds: pixel thresholds δ on the evaluation raster.
    eval_resolution: (height, width) of the evaluation raster.

  Returns:
    {'occlusion_accuracy', 'pts_within_{δ}', 'jaccard_{δ}', 'average_pts_within_thresh',
    'average_jaccard', 'videos_without_visible'}: (sum, count) float32 scalar pairs.
  """
  batch_size, num_tracks, num_frames = occluded.shape
  chex.assert_shape(query_points, (batch_size, num_tracks, 3))
  chex.assert_shape([target_points, pred_points], (batch_size, num_tracks, num_frames, 2))
  chex.assert_shape(pred_occluded, (batch_size, num_tracks, num_frames))

  video_weight = _example_weight(mask, batch_size)
  query_frame = jnp.round(query_points[..., 0]).astype(jnp.int32)
  track_ok = jnp.broadcast_to(video_weight[:, None] > 0, (batch_size, num_tracks))
  if tracks_valid is not None:
    chex.assert_shape(tracks_valid, (batch_size, num_tracks))
    track_ok &= tracks_valid.astype(bool)
  _check_query_frames(query_frame, track_ok, num_frames)
  scored = _tapvid_eval_frames(query_frame, num_frames, query_mode) & track_ok[..., None]

  (in_h, in_w), (out_h, out_w) = image_size, eval_resolution
  target_points = convert_grid_coordinates(target_points, (in_w, in_h), (out_w, out_h))
  pred_points = convert_grid_coordinates(pred_points, (in_w, in_h), (out_w, out_h))
  sq_dist = jnp.sum(jnp.square(pred_points - target_points), axis=-1)

  visible = ~occluded.astype(bool)
  pred_visible = ~pred_occluded.astype(bool)

  def per_video_count(x: jax.Array) -> jax.Array:
    return jnp.sum(x & scored, axis=(1, 2)).astype(jnp.float32)

  num_scored = per_video_count(jnp.ones_like(visible))
  num_visible = per_video_count(visible)
  has_scored = (num_scored > 0).astype(jnp.float32) * video_weight
  has_visible = (num_visible > 0).astype(jnp.float32) * video_weight
  # Jaccard's denominator GT visible + FP is 0 only if neither GT nor prediction is visible
  # on any scored frame (with no GT visible, FP is every predicted-visible entry).
  has_jaccard = ((num_visible + per_video_count(pred_visible)) > 0).astype(
      jnp.float32) * video_weight

  def video_mean(numerator: jax.Array, denominator: jax.Array, weight: jax.Array):
    ratio = numerator / jnp.maximum(denominator, 1.0)
    return _pair(jnp.sum(ratio * weight), jnp.sum(weight))

  metrics = {
      'occlusion_accuracy': video_mean(
          per_video_count(visible == pred_visible), num_scored, has_scored
      ),
  }
  within_fracs, jaccards = [], []
  for thresh in thresholds:
    within = sq_dist < thresh**2
    true_pos = per_video_count(visible & within & pred_visible)
    false_pos = per_video_count(pred_visible & (~visible | ~within))
    within_fracs.append(per_video_count(visible & within) / jnp.maximum(num_visible, 1.0))
    jaccards.append(true_pos / jnp.maximum(num_visible + false_pos, 1.0))
    metrics[f'pts_within_{thresh}'] = _pair(
        jnp.sum(within_fracs[-1] * has_visible), jnp.sum(has_visible)
    )
    metrics[f'jaccard_{thresh}'] = _pair(
        jnp.sum(jaccards[-1] * has_jaccard), jnp.sum(has_jaccard)
    )
  metrics['average_pts_within_thresh'] = _pair(
      jnp.sum(jnp.mean(jnp.stack(within_fracs), axis=0) * has_visible), jnp.sum(has_visible)
  )
  metrics['average_jaccard'] = _pair(
      jnp.sum(jnp.mean(jnp.stack(jaccards), axis=0) * has_jaccard), jnp.sum(has_jaccard)
  )
  metrics['videos_without_visible'] = _pair(
      jnp.sum(has_scored * (num_visible == 0)), jnp.sum(has_scored)
  )
  return metrics


def example_masked_sum(values: jax.Array, example_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Sum and count of `values` [B, ...] over the valid examples of `example_mask` [B]."""
  weights = jnp.broadcast_to(
      example_mask.reshape(example_mask.shape + (1,) * (values.ndim - 1)), values.shape
  ).astype(values.dtype)
  return jnp.sum(values * weights), jnp.sum(weights)


# ----------------------------------------------------------------------------------------
# Depth.
# ----------------------------------------------------------------------------------------


def depth_metrics(
    pred_depth: jax.Array,
    gt_depth: jax.Array,
    *,
    valid: jax.Array | None = None,
    mask: jax.Array | None = None,
    min_depth: float = 1e-3,
) -> MetricSums:
  """Depth metrics in metric units, pooled over valid pixels (the averaging unit).

  A pixel is valid where `valid` is set, the example is not padding, and the ground truth
  is finite and above `min_depth` (so AbsRel never divides by zero). Predictions are
  clipped to at least `min_depth` for the ratio δ tests, as kauldron clips them to ≥ 0.
  Callers must invert any training target transform (e.g. log depth) first.

  Args:
    pred_depth: [B, ...] predicted metric depth, same shape as `gt_depth`.
    gt_depth: [B, ...] ground-truth metric depth (e.g. [B, T, H, W, 1]).
    valid: optional bool mask broadcastable to `gt_depth`.
    mask: optional [B] bool example mask (`_mask`).
    min_depth: smallest ground truth considered valid; floor for predictions in δ.

  Returns:
    {'abs_rel', 'delta_1.25', 'delta_1.25^2', 'delta_1.25^3', 'mse'}: (sum over valid
    pixels, number of valid pixels); `finalize` derives 'rmse' from 'mse'.
  """
  chex.assert_equal_shape([pred_depth, gt_depth])
  batch_size = gt_depth.shape[0]
  example_ok = _example_weight(mask, batch_size) > 0
  is_valid = jnp.isfinite(gt_depth) & (gt_depth > min_depth)
  is_valid &= example_ok.reshape((batch_size,) + (1,) * (gt_depth.ndim - 1))
  if valid is not None:
    is_valid &= jnp.broadcast_to(valid.astype(bool), gt_depth.shape)
  weight = is_valid.astype(jnp.float32)
  # Padding may hold garbage (inf, NaN, 0): replace it before any arithmetic so that
  # 0 * NaN never reaches a sum.
  safe_gt = jnp.where(is_valid, gt_depth, 1.0)
  safe_pred = jnp.where(is_valid, pred_depth, 1.0)
  clipped_pred = jnp.maximum(safe_pred, min_depth)
  ratio = jnp.maximum(clipped_pred / safe_gt, safe_gt / clipped_pred)
  count = jnp.sum(weight)

  def pooled(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _pair(jnp.sum(x * weight), count)

  return {
      'abs_rel': pooled(jnp.abs(safe_pred - safe_gt) / safe_gt),
      'delta_1.25': pooled(ratio < 1.25),
      'delta_1.25^2': pooled(ratio < 1.25**2),
      'delta_1.25^3': pooled(ratio < 1.25**3),
      'mse': pooled(jnp.square(safe_pred - safe_gt)),
  }


# ----------------------------------------------------------------------------------------
# Box tracking.
# ----------------------------------------------------------------------------------------


def box_iou(boxes_a: jax.Array, boxes_b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """IoU of axis-aligned [ymin, xmin, ymax, xmax] boxes, elementwise over leading axes.

  An inverted side (min > max) counts as zero length, so a malformed prediction has zero
  area instead of a spurious positive one.

  Args:
    boxes_a: [..., 4] boxes.
    boxes_b: [..., 4] boxes, broadcastable against `boxes_a`.

  Returns:
    (iou, has_union): [...] IoU (0 where the union is empty) and [...] bool, False where
    the union has zero area and the IoU is undefined.
  """

  def area(boxes):
    heights = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    widths = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return heights * widths

  top_left = jnp.maximum(boxes_a[..., :2], boxes_b[..., :2])
  bottom_right = jnp.minimum(boxes_a[..., 2:], boxes_b[..., 2:])
  inter_hw = jnp.maximum(bottom_right - top_left, 0.0)
  intersection = inter_hw[..., 0] * inter_hw[..., 1]
  union = area(boxes_a) + area(boxes_b) - intersection
  has_union = union > 0
  iou = jnp.where(has_union, intersection / jnp.where(has_union, union, 1.0), 0.0)
  return iou, has_union


def box_tracking_metrics(
    pred_boxes: jax.Array,
    gt_boxes: jax.Array,
    boxes_valid: jax.Array,
    *,
    mask: jax.Array | None = None,
    query_frame: int = 0,
) -> MetricSums:
  """Mean IoU over valid (video, track, frame) entries after the conditioning frame.

  Frames up to and including `query_frame` are excluded: the readout is given the box on
  the query frame, and it is causal, so earlier frames carry no prediction. Entries with a
  zero-area union are excluded from both sum and count.

  Args:
    pred_boxes: [B, T, K, 4] predicted normalised [ymin, xmin, ymax, xmax].
    gt_boxes: [B, T, K, 4] ground-truth boxes in the same units.
    boxes_valid: [B, T, K] bool, the box exists on that frame.
    mask: optional [B] bool example mask (`_mask`).
    query_frame: frame index of the conditioning boxes.

  Returns:
    {'box_iou': (sum of IoU, number of scored entries)}.
  """
  batch_size, num_frames, num_tracks = boxes_valid.shape
  chex.assert_shape([pred_boxes, gt_boxes], (batch_size, num_frames, num_tracks, 4))
  iou, has_union = box_iou(pred_boxes, gt_boxes)
  after_query = (jnp.arange(num_frames) > query_frame)[None, :, None]
  example_ok = (_example_weight(mask, batch_size) > 0)[:, None, None]
  scored = boxes_valid.astype(bool) & has_union & after_query & example_ok
  # `where`, not a product: padding may hold NaN boxes and 0 * NaN is NaN.
  iou_sum = jnp.sum(jnp.where(scored, iou, 0.0))
  return {'box_iou': _pair(iou_sum, jnp.sum(scored))}


# ----------------------------------------------------------------------------------------
# Classification.
# ----------------------------------------------------------------------------------------


def average_view_probabilities(logits: jax.Array, view_axis: int = 1) -> jax.Array:
  """Multi-view testing: mean of the per-view softmax scores (clips x spatial crops).

  Args:
    logits: [B, V, C] logits of V views per video (any view axis).
    view_axis: the axis holding the views.

  Returns:
    [B, C] averaged class probabilities, to pass to `classification_metrics`.
  """
  return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=view_axis)


def classification_metrics(
    scores: jax.Array,
    labels: jax.Array,
    *,
    mask: jax.Array | None = None,
    top_k: Sequence[int] = (1, 5),
) -> MetricSums:
  """Top-k accuracy per example; ties are broken towards the lower class index.

  Args:
    scores: [B, C] logits or (view-averaged) probabilities.
    labels: [B] int class labels.
    mask: optional [B] bool example mask (`_mask`).
    top_k: the k values to report; k is capped at C.

  Returns:
    {'top_{k}': (number correct, number of examples)}.
  """
  batch_size, num_classes = scores.shape
  chex.assert_shape(labels, (batch_size,))
  weight = _example_weight(mask, batch_size)
  _, ranked = jax.lax.top_k(scores, min(max(top_k), num_classes))
  hits = ranked == labels[:, None]
  return {
      f'top_{k}': _pair(jnp.sum(jnp.any(hits[:, :k], axis=-1) * weight), jnp.sum(weight))
      for k in top_k
  }
