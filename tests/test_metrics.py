"""Tests for videolib.metrics: golden vectors, mask invariance, independent references."""

from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
import jax
import numpy as np
import pytest

from videolib import metrics

THRESHOLDS = (1, 2, 4, 8, 16)


def _golden_batch():
  """docs/evaluation_reference.md §1.7: 1 video, T = 4, two points, GT (10, 10) on every frame."""
  query_points = np.array([[[0.0, 10.0, 10.0], [1.0, 10.0, 10.0]]], np.float32)
  target_points = np.full((1, 2, 4, 2), 10.0, np.float32)
  occluded = np.zeros((1, 2, 4), bool)
  occluded[0, 1, 3] = True
  pred_points = target_points.copy()
  pred_points[0, 0, 1:, 0] += np.array([0.5, 3.0, 20.0])
  pred_occluded = np.zeros((1, 2, 4), bool)
  pred_occluded[0, 1, 2:] = True
  return dict(
      query_points=query_points,
      target_points=target_points,
      occluded=occluded,
      pred_points=pred_points,
      pred_occluded=pred_occluded,
  )


GOLDEN = {
    'strided': {
        'occlusion_accuracy': 5 / 6,
        'pts_within_1': 0.6, 'pts_within_2': 0.6,
        'pts_within_4': 0.8, 'pts_within_8': 0.8, 'pts_within_16': 0.8,
        'average_pts_within_thresh': 0.72,
        'jaccard_1': 2 / 7, 'jaccard_2': 2 / 7,
        'jaccard_4': 0.5, 'jaccard_8': 0.5, 'jaccard_16': 0.5,
        'average_jaccard': 0.4143,
        'videos_without_visible': 0.0,
    },
    'first': {
        'occlusion_accuracy': 0.8,
        'pts_within_1': 0.5, 'pts_within_2': 0.5,
        'pts_within_4': 0.75, 'pts_within_8': 0.75, 'pts_within_16': 0.75,
        'average_pts_within_thresh': 0.65,
        'jaccard_1': 1 / 6, 'jaccard_2': 1 / 6,
        'jaccard_4': 0.4, 'jaccard_8': 0.4, 'jaccard_16': 0.4,
        'average_jaccard': 0.3067,
        'videos_without_visible': 0.0,
    },
}


@pytest.mark.parametrize('query_mode', ['strided', 'first'])
def test_tapvid_golden_vector(query_mode):
  values = metrics.finalize(
      metrics.tapvid_metrics(**_golden_batch(), image_size=(256, 256), query_mode=query_mode)
  )
  assert values.keys() == GOLDEN[query_mode].keys()
  for name, expected in GOLDEN[query_mode].items():
    assert round(values[name], 4) == round(expected, 4), name


def test_tapvid_rescales_input_resolution_to_256():
  # The golden vector drawn on a 128 x 64 (H x W) raster: y shrinks by 2 and x by 4, so
  # the 0.5 px error becomes 0.125 px. Rescaled to 256 x 256 the numbers are unchanged.
  batch = _golden_batch()
  scale = np.array([64 / 256, 128 / 256], np.float32)  # (x, y) = (W, H) / 256
  batch['target_points'] = batch['target_points'] * scale
  batch['pred_points'] = batch['pred_points'] * scale
  values = metrics.finalize(
      metrics.tapvid_metrics(**batch, image_size=(128, 64), query_mode='strided')
  )
  for name, expected in GOLDEN['strided'].items():
    assert round(values[name], 4) == round(expected, 4), name


def _random_tapvid_batch(rng, batch_size=4, num_tracks=5, num_frames=6):
  query_t = rng.integers(0, num_frames, size=(batch_size, num_tracks))
  query_points = np.concatenate(
      [query_t[..., None], rng.uniform(0, 64, size=(batch_size, num_tracks, 2))], axis=-1
  ).astype(np.float32)
  target_points = rng.uniform(0, 64, size=(batch_size, num_tracks, num_frames, 2))
  # Errors spanning all thresholds (in 256 px: x4 for a 64 px raster).
  scales = rng.choice([0.1, 0.5, 2.0, 8.0], target_points.shape)
  noise = rng.normal(size=target_points.shape) * scales
  return dict(
      query_points=query_points,
      target_points=target_points.astype(np.float32),
      occluded=rng.uniform(size=(batch_size, num_tracks, num_frames)) < 0.3,
      pred_points=(target_points + noise).astype(np.float32),
      pred_occluded=rng.uniform(size=(batch_size, num_tracks, num_frames)) < 0.3,
  )


def _reference_tapvid(batch, query_mode, image_size):
  """Independent numpy port of tapnet `compute_tapvid_metrics` (per-video values)."""
  height, width = image_size
  scale = np.array([256 / width, 256 / height])
  gt_tracks = batch['target_points'] * scale
  pred_tracks = batch['pred_points'] * scale
  num_frames = gt_tracks.shape[2]
  eye = np.eye(num_frames, dtype=np.int32)
  if query_mode == 'first':
    query_frame_to_eval_frames = np.cumsum(eye, axis=1) - eye
  else:
    query_frame_to_eval_frames = 1 - eye
  query_frame = np.round(batch['query_points'][..., 0]).astype(np.int32)
  evaluation_points = query_frame_to_eval_frames[query_frame] > 0
  gt_occluded, pred_occluded = batch['occluded'], batch['pred_occluded']
  out = {}
  out['occlusion_accuracy'] = np.sum(
      (pred_occluded == gt_occluded) & evaluation_points, axis=(1, 2)
  ) / np.sum(evaluation_points, axis=(1, 2))
  visible, pred_visible = ~gt_occluded, ~pred_occluded
  fracs, jaccards = [], []
  for thresh in THRESHOLDS:
    within = np.sum(np.square(pred_tracks - gt_tracks), axis=-1) < thresh**2
    correct = within & visible
    frac = np.sum(correct & evaluation_points, axis=(1, 2)) / np.sum(
        visible & evaluation_points, axis=(1, 2)
    )
    tp = np.sum(correct & pred_visible & evaluation_points, axis=(1, 2))
    gt_pos = np.sum(visible & evaluation_points, axis=(1, 2))
    fp = np.sum(((~visible) | (~within)) & pred_visible & evaluation_points, axis=(1, 2))
    out[f'pts_within_{thresh}'] = frac
    out[f'jaccard_{thresh}'] = tp / (gt_pos + fp)
    fracs.append(frac)
    jaccards.append(tp / (gt_pos + fp))
  out['average_jaccard'] = np.mean(jaccards, axis=0)
  out['average_pts_within_thresh'] = np.mean(fracs, axis=0)
  return out


@pytest.mark.parametrize('query_mode', ['strided', 'first'])
def test_tapvid_matches_independent_reference_per_video_mean(query_mode):
  rng = np.random.default_rng(0)
  batch = _random_tapvid_batch(rng)
  values = metrics.finalize(
      metrics.tapvid_metrics(**batch, image_size=(64, 64), query_mode=query_mode)
  )
  reference = _reference_tapvid(batch, query_mode, (64, 64))
  for name, per_video in reference.items():
    assert np.all(np.isfinite(per_video)), 'random batch must have no 0/0 video'
    np.testing.assert_allclose(values[name], np.mean(per_video), rtol=1e-5, err_msg=name)
  # The random errors must hit several thresholds, or the comparison proves little.
  assert 0.1 < values['pts_within_2'] < values['pts_within_16'] < 1.0


_jit_tapvid = jax.jit(
    metrics.tapvid_metrics, static_argnames=('image_size', 'query_mode', 'thresholds')
)


def _assert_same_sums(a, b):
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_allclose(a[name][0], b[name][0], rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(a[name][1], b[name][1], err_msg=name)


def test_tapvid_padding_examples_and_tracks_change_nothing():
  rng = np.random.default_rng(1)
  batch = _random_tapvid_batch(rng, batch_size=3)
  kwargs = dict(image_size=(64, 64), query_mode='first')
  reference = _jit_tapvid(**batch, **kwargs)

  padded = {k: np.concatenate([v, v[:2]], axis=0) for k, v in batch.items()}
  garbage = (np.nan, np.inf, -1e9)
  for key in ('query_points', 'target_points', 'pred_points'):
    padded[key][3:] = rng.choice(garbage, size=padded[key][3:].shape)
  padded['occluded'][3:] = rng.uniform(size=padded['occluded'][3:].shape) < 0.5
  # Also pad every video with two invalid tracks full of garbage.
  padded = {
      k: np.concatenate([v, rng.choice(garbage, size=v[:, :2].shape).astype(v.dtype)], axis=1)
      for k, v in padded.items()
  }
  tracks_valid = np.ones(padded['occluded'].shape[:2], bool)
  tracks_valid[:, -2:] = False
  mask = np.array([True] * 3 + [False] * 2)
  result = _jit_tapvid(**padded, tracks_valid=tracks_valid, mask=mask, **kwargs)
  _assert_same_sums(reference, result)


def test_tapvid_split_batches_accumulate_to_one_batch():
  rng = np.random.default_rng(2)
  batch = _random_tapvid_batch(rng, batch_size=4)
  kwargs = dict(image_size=(64, 64), query_mode='strided')
  whole = _jit_tapvid(**batch, **kwargs)
  parts = None
  for part in (slice(0, 1), slice(1, 4)):
    part_sums = _jit_tapvid(**{k: v[part] for k, v in batch.items()}, **kwargs)
    parts = metrics.accumulate(parts, part_sums)
  _assert_same_sums(whole, parts)
  assert float(whole['average_jaccard'][1]) == 4.0


def test_tapvid_video_without_visible_ground_truth_scores_as_tapnet():
  """A video whose scored ground truth is all occluded, hand-computed as tapnet does.

  Video 0 is the golden video (AJ 0.4143). Video 1 has the golden predictions but every
  ground-truth point occluded: no visible GT, and the prediction says visible on 4 of its
  6 scored entries, so Jaccard = TP / (GT visible + FP) = 0 / (0 + 4) = 0 at every
  threshold and the video counts; its < δ is 0/0 and is left out. Video 2 has everything
  occluded, prediction too: Jaccard 0/0, left out of every mean but occlusion accuracy.
  """
  golden = _golden_batch()
  no_visible_gt = {k: v.copy() for k, v in golden.items()}
  no_visible_gt['occluded'][:] = True
  nothing_visible = {k: v.copy() for k, v in no_visible_gt.items()}
  nothing_visible['pred_occluded'][:] = True
  batch = {k: np.concatenate([golden[k], no_visible_gt[k], nothing_visible[k]], axis=0)
           for k in golden}
  sums = metrics.tapvid_metrics(**batch, image_size=(256, 256), query_mode='strided')
  values = metrics.finalize(sums)
  assert all(np.isfinite(v) for v in values.values())
  assert float(sums['average_jaccard'][1]) == 2.0
  assert float(sums['jaccard_4'][1]) == 2.0
  assert values['average_jaccard'] == pytest.approx((0.414286 + 0.0) / 2, abs=1e-5)
  assert values['jaccard_4'] == pytest.approx((0.5 + 0.0) / 2)
  assert float(sums['average_pts_within_thresh'][1]) == 1.0
  assert values['average_pts_within_thresh'] == pytest.approx(0.72)
  assert values['videos_without_visible'] == pytest.approx(2 / 3)
  # OA is defined for all three: GT all occluded; video 1 predicts occluded on 2 of its 6
  # scored entries (B at frames 2, 3), video 2 on all 6.
  assert values['occlusion_accuracy'] == pytest.approx((5 / 6 + 2 / 6 + 1.0) / 3)


@pytest.mark.parametrize('jit', [False, True])
def test_tapvid_query_frame_outside_clip_is_an_error(jit):
  batch = _golden_batch()
  out_of_clip = {k: np.concatenate([v, v[:, :1]], axis=1) for k, v in batch.items()}
  out_of_clip['query_points'][0, 2, 0] = 7.0  # T = 4
  fn = _jit_tapvid if jit else metrics.tapvid_metrics
  with pytest.raises(Exception, match='query frame outside the clip') as error:
    jax.block_until_ready(fn(**out_of_clip, image_size=(256, 256), query_mode='first'))
  assert 'example 0 track 2' in str(error.value)
  # The same track marked as padding, or in a padding example, is fine.
  tracks_valid = np.array([[True, True, False]])
  values = metrics.finalize(fn(**out_of_clip, tracks_valid=tracks_valid,
                               image_size=(256, 256), query_mode='first'))
  assert round(values['average_jaccard'], 4) == GOLDEN['first']['average_jaccard']
  padded_example = {k: np.concatenate([v, out_of_clip[k]], axis=0)
                    for k, v in {k: np.concatenate([v, v[:, :1]], axis=1)
                                 for k, v in batch.items()}.items()}
  fn(**padded_example, mask=np.array([True, False]), image_size=(256, 256),
     query_mode='first')


def test_tapvid_rejects_unknown_query_mode():
  with pytest.raises(ValueError, match='query_mode'):
    metrics.tapvid_metrics(**_golden_batch(), image_size=(256, 256), query_mode='last')


# ----------------------------------------------------------------------------------------
# Depth.
# ----------------------------------------------------------------------------------------

_DEPTH_SHAPE = (3, 2, 4, 5, 1)
_jit_depth = jax.jit(metrics.depth_metrics)


def _numpy_depth(pred, gt, valid):
  pred, gt = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
  ratio = np.maximum(np.maximum(pred, 1e-3) / gt, gt / np.maximum(pred, 1e-3))
  return {
      'abs_rel': np.mean(np.abs(pred - gt) / gt),
      'delta_1.25': np.mean(ratio < 1.25),
      'delta_1.25^2': np.mean(ratio < 1.25**2),
      'delta_1.25^3': np.mean(ratio < 1.25**3),
      'mse': np.mean((pred - gt) ** 2),
      'rmse': np.sqrt(np.mean((pred - gt) ** 2)),
  }


@settings(max_examples=25, deadline=None)
@given(
    gt=hnp.arrays(np.float32, _DEPTH_SHAPE, elements=st.floats(0.5, 50.0, width=32)),
    pred=hnp.arrays(np.float32, _DEPTH_SHAPE, elements=st.floats(-1.0, 60.0, width=32)),
    valid=hnp.arrays(np.bool_, _DEPTH_SHAPE),
    mask=hnp.arrays(np.bool_, (3,)),
)
def test_depth_matches_numpy_pooled_over_valid_pixels(gt, pred, valid, mask):
  values = metrics.finalize(_jit_depth(pred, gt, valid=valid, mask=mask))
  pixels = valid & mask[:, None, None, None, None]
  if not pixels.any():
    assert all(np.isnan(v) for v in values.values())
    return
  for name, expected in _numpy_depth(pred, gt, pixels).items():
    np.testing.assert_allclose(values[name], expected, rtol=2e-5, atol=1e-6, err_msg=name)


def test_depth_padding_and_invalid_pixels_change_nothing():
  rng = np.random.default_rng(3)
  gt = rng.uniform(1.0, 20.0, _DEPTH_SHAPE).astype(np.float32)
  pred = (gt * rng.uniform(0.7, 1.4, _DEPTH_SHAPE)).astype(np.float32)
  reference = _jit_depth(pred, gt)
  padded_gt = np.concatenate([gt, np.full_like(gt[:1], np.nan)], axis=0)
  padded_pred = np.concatenate([pred, np.full_like(pred[:1], np.inf)], axis=0)
  padded_gt[0, 0, 0, 0, 0] = 0.0  # invalid ground truth: excluded, no division by zero
  fixed = _jit_depth(padded_pred, padded_gt, mask=np.array([True, True, True, False]))
  expected = _numpy_depth(pred, gt, np.ones(_DEPTH_SHAPE, bool) & (padded_gt[:3] > 1e-3))
  for name, value in metrics.finalize(fixed).items():
    np.testing.assert_allclose(value, expected[name], rtol=1e-5, err_msg=name)
  assert float(reference['abs_rel'][1]) == gt.size
  assert float(fixed['abs_rel'][1]) == gt.size - 1


# ----------------------------------------------------------------------------------------
# Boxes.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'box_a, box_b, expected_iou, defined',
    [
        ([0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], 1.0, True),  # identical
        ([0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9], 0.0, True),  # disjoint
        ([0.0, 0.0, 0.4, 0.2], [0.0, 0.1, 0.4, 0.3], 1 / 3, True),  # half of each overlaps
        ([0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3], 0.0, False),  # zero area: masked
        ([0.5, 0.5, 0.1, 0.1], [0.1, 0.1, 0.5, 0.5], 0.0, True),  # inverted prediction
    ],
)
def test_box_iou_golden_cases(box_a, box_b, expected_iou, defined):
  iou, has_union = metrics.box_iou(np.array(box_a, np.float32), np.array(box_b, np.float32))
  assert float(iou) == pytest.approx(expected_iou, abs=1e-6)
  assert bool(has_union) == defined


def test_box_metric_excludes_query_frame_invalid_zero_area_and_padding():
  gt = np.tile(np.array([0.0, 0.0, 0.4, 0.2], np.float32), (2, 3, 2, 1))  # [B=2, T=3, K=2]
  pred = gt.copy()
  pred[0, 1, 0] = [0.0, 0.1, 0.4, 0.3]  # IoU 1/3
  pred[0, 2, 0] = [0.5, 0.5, 0.9, 0.9]  # IoU 0
  pred[0, 0] = [0.5, 0.5, 0.9, 0.9]  # query frame: ignored
  gt[0, 2, 1] = pred[0, 2, 1] = 0.0  # zero-area union on a valid entry: ignored
  pred[1] = np.nan  # padding example
  valid = np.ones((2, 3, 2), bool)
  valid[0, 1, 1] = False
  pred[0, 1, 1] = 0.0
  sums = metrics.box_tracking_metrics(pred, gt, valid, mask=np.array([True, False]))
  # Scored: (t1, k0) 1/3, (t2, k0) 0; (t1, k1) invalid, (t2, k1) zero-area.
  assert float(sums['box_iou'][1]) == 2.0
  assert metrics.finalize(sums)['box_iou'] == pytest.approx(1 / 6)


_BOX_SHAPE = (2, 3, 4, 4)


@settings(max_examples=25, deadline=None)
@given(
    corners=hnp.arrays(np.float32, (2,) + _BOX_SHAPE, elements=st.floats(0.0, 1.0, width=32)),
    valid=hnp.arrays(np.bool_, _BOX_SHAPE[:3]),
)
def test_box_iou_matches_numpy(corners, valid):
  # Sorted corners give well-formed boxes, including degenerate ones.
  lo, hi = np.minimum(corners[0], corners[1]), np.maximum(corners[0], corners[1])
  gt = np.stack([lo[..., 0], lo[..., 1], hi[..., 0], hi[..., 1]], axis=-1)
  pred = np.stack([lo[..., 2], lo[..., 3], hi[..., 2], hi[..., 3]], axis=-1)
  total, count = 0.0, 0
  for b, t, k in np.ndindex(*valid.shape):
    if not valid[b, t, k] or t == 0:
      continue
    p, g = pred[b, t, k].astype(np.float64), gt[b, t, k].astype(np.float64)
    inter_h = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    inter = inter_h * max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    if union > 0:
      total, count = total + inter / union, count + 1
  sums = jax.jit(metrics.box_tracking_metrics)(pred, gt, valid)
  assert float(sums['box_iou'][1]) == count
  np.testing.assert_allclose(float(sums['box_iou'][0]), total, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------
# Classification and finalize.
# ----------------------------------------------------------------------------------------


def test_classification_top_k_with_view_averaging_and_mask():
  # Two views per video; view averaging decides video 0 (view 1 is confidently class 2).
  logits = np.array(
      [
          [[2.0, 1.0, 0.0, -1, -1, -1], [0.0, 0.0, 6.0, -1, -1, -1]],
          [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]],
          [[9.0, 0, 0, 0, 0, 0], [9.0, 0, 0, 0, 0, 0]],  # padding
      ],
      np.float32,
  )
  labels = np.array([2, 0, 5])
  probs = metrics.average_view_probabilities(logits)
  np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-6)
  sums = metrics.classification_metrics(probs, labels, mask=np.array([True, True, False]))
  values = metrics.finalize(sums)
  # Video 0: class 2 wins after averaging. Video 1: label 0 is ranked last (6th).
  assert values == {'top_1': 0.5, 'top_5': 0.5}
  assert float(sums['top_1'][1]) == 2.0
  with_six = metrics.finalize(metrics.classification_metrics(probs[:2], labels[:2], top_k=(6,)))
  assert with_six == {'top_6': 1.0}


def test_finalize_derives_rmse_and_marks_empty_metrics():
  values = metrics.finalize({'depth/mse': (np.float32(8.0), np.float32(2.0)), 'x': (0.0, 0.0)})
  assert values['depth/mse'] == 4.0
  assert values['depth/rmse'] == 2.0
  assert np.isnan(values['x'])


def test_accumulate_rejects_mismatched_keys():
  with pytest.raises(ValueError, match='keys differ'):
    metrics.accumulate({'a': (1.0, 1.0)}, {'b': (1.0, 1.0)})
