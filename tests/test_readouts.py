"""Tests for moog.readouts: shapes, stop-gradient, recurrence, streaming, losses, training."""

import functools

import einops
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from moog import modules
from moog.readouts import heads

TINY = dict(num_layers=1, num_heads=2, qkv_size=16, mlp_dim=32, num_fourier_bases=4)
TINY_RECURRENT = dict(width=16, **TINY)
NUM_FRAMES, NUM_TOKENS, FEATURE_DIM = 5, 6, 8

# The test programs are tiny and compile time dominates: skip XLA's backend optimisations.
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def _moog_outputs(batch_shape, seed=0, num_frames=NUM_FRAMES):
  """Fake MooG outputs with predicted / corrected states [*b, T, n, d]."""
  keys = jax.random.split(jax.random.PRNGKey(seed), 2)
  shape = (*batch_shape, num_frames, NUM_TOKENS, FEATURE_DIM)
  predicted = jax.random.normal(keys[0], shape)
  corrected = jax.random.normal(keys[1], shape)
  return {
      'states_predicted': predicted,
      'states_corrected': corrected,
      'states_concat': jnp.concatenate([predicted, corrected], axis=-2),
  }


def _slice_frames(outputs, frames):
  return {k: v[..., frames, :, :] for k, v in outputs.items()}


@pytest.fixture(scope='module')
def point_setup():
  """A tiny point head, its params, a jitted apply and inputs (compiled once per shape)."""
  head = heads.PointReadout(**TINY_RECURRENT)
  outputs = _moog_outputs((2,))
  query_xy = jax.random.uniform(jax.random.PRNGKey(1), (2, 3, 2))
  query_frame = jnp.array([[0, 1, 3], [0, 2, 4]])
  params = jit(head.init)(jax.random.PRNGKey(2), outputs, query_xy, query_frame)
  return jit(head.apply), params, outputs, query_xy, query_frame


@pytest.mark.parametrize('batch_shape', [(), (2, 3)])
def test_point_readout_output_shapes(point_setup, batch_shape):
  apply, params, *_ = point_setup
  outputs = _moog_outputs(batch_shape)
  query_xy = jnp.full((*batch_shape, 4, 2), 0.5)
  query_frame = jnp.zeros((*batch_shape, 4), jnp.int32)
  out = apply(params, outputs, query_xy, query_frame)
  assert out['position'].shape == (*batch_shape, 4, NUM_FRAMES, 2)
  for key in ('visibility_logit', 'certainty_logit', 'visible'):
    assert out[key].shape == (*batch_shape, 4, NUM_FRAMES)
  assert out['visible'].dtype == jnp.bool_
  assert out['readout_state'].shape == (*batch_shape, 4, 16)
  assert jnp.all((out['position'] > 0) & (out['position'] < 1))
  expected_visible = (
      jax.nn.sigmoid(out['visibility_logit']) * jax.nn.sigmoid(out['certainty_logit']) > 0.5
  )
  np.testing.assert_array_equal(out['visible'], expected_visible)


def test_box_readout_output_shapes():
  outputs = _moog_outputs((2,))
  boxes = jnp.tile(jnp.array([0.1, 0.2, 0.5, 0.6]), (2, 3, 1))
  box_head = heads.BoxReadout(features='corrected', **TINY_RECURRENT)
  box_params = jit(box_head.init)(jax.random.PRNGKey(0), outputs, boxes)
  box_out = jit(box_head.apply)(box_params, outputs, boxes)
  assert box_out['boxes'].shape == (2, NUM_FRAMES, 3, 4)
  assert box_out['readout_state'].shape == (2, 3, 16)
  assert jnp.all((box_out['boxes'] > 0) & (box_out['boxes'] < 1))


def test_dense_readout_decodes_any_resolution_pixel_by_pixel():
  """One set of parameters decodes an 8 x 8 grid and a per-frame 2 x 3 pixel subset, and
  the subset values equal the full-resolution values at those pixels."""
  outputs = _moog_outputs((2,))
  dense = heads.DenseReadout(features='predicted', **TINY)
  full_coords = modules.grid_coordinates(8, 8)
  params = jit(dense.init)(jax.random.PRNGKey(0), outputs, full_coords)
  apply = jit(dense.apply)
  full = apply(params, outputs, full_coords)
  assert full.shape == (2, NUM_FRAMES, 8, 8, 1)
  rows, cols = np.array([1, 5]), np.array([2, 3, 7])
  per_frame = jnp.broadcast_to(full_coords[rows][:, cols], (2, NUM_FRAMES, 2, 3, 2))
  subset = apply(params, outputs, per_frame)
  assert subset.shape == (2, NUM_FRAMES, 2, 3, 1)
  np.testing.assert_allclose(subset, full[:, :, rows][:, :, :, cols], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('pixels_per_chunk', [7, 16, 64])  # Padded, exact, whole grid.
def test_dense_readout_in_pixel_chunks_equals_one_pass(pixels_per_chunk):
  outputs = _moog_outputs((2,))
  whole = heads.DenseReadout(features='predicted', **TINY)
  chunked = heads.DenseReadout(features='predicted', pixels_per_chunk=pixels_per_chunk,
                                  **TINY)
  grid = modules.grid_coordinates(8, 6)
  params = jit(whole.init)(jax.random.PRNGKey(0), outputs, grid)
  assert (jax.tree.structure(jit(chunked.init)(jax.random.PRNGKey(0), outputs, grid))
          == jax.tree.structure(params))
  np.testing.assert_allclose(jit(chunked.apply)(params, outputs, grid),
                             jit(whole.apply)(params, outputs, grid), rtol=1e-5, atol=1e-6)


def _point_targets(batch_size=2, num_tracks=3):
  rng = np.random.default_rng(0)
  target_points = rng.uniform(0, 64, (batch_size, num_tracks, NUM_FRAMES, 2)).astype(np.float32)
  occluded = rng.uniform(size=(batch_size, num_tracks, NUM_FRAMES)) < 0.3
  return target_points, occluded


def test_gradients_reach_features_only_when_finetuning(point_setup):
  _, point_params, outputs, query_xy, query_frame = point_setup
  target_points, occluded = _point_targets()
  coords = modules.grid_coordinates(2, 3)
  # `finetune` changes no parameter, so one set of parameters serves both settings.
  depth_params = jit(heads.DenseReadout(**TINY).init)(jax.random.PRNGKey(0), outputs, coords)
  for finetune in (False, True):
    point_head = heads.PointReadout(finetune=finetune, **TINY_RECURRENT)
    dense = heads.DenseReadout(finetune=finetune, **TINY)

    def losses(outputs, point_head=point_head, dense=dense):
      points = point_head.apply(point_params, outputs, query_xy, query_frame)
      depth = dense.apply(depth_params, outputs, coords)
      return (
          heads.point_tracking_loss(
              points, target_points, occluded, query_frame, image_size=(64, 64)
          )[0],
          heads.depth_loss(depth, jnp.full(depth.shape, 3.0)),
      )

    point_grads, depth_grads = jit(jax.jacrev(losses))(outputs)
    for grads in (point_grads, depth_grads):
      assert bool(jnp.any(grads['states_concat'] != 0)) == finetune, finetune


def test_state_resets_to_conditioning_on_query_frame(point_setup):
  apply, params, outputs, query_xy, _ = point_setup
  query_frame = jnp.array([[2, 2, 2], [2, 2, 2]])
  full = apply(params, outputs, query_xy, query_frame)
  # From the query frame on, the outputs are those of a run started there, whatever state
  # it is handed: the reset on frame 0 discards it.
  other_state = jax.random.normal(jax.random.PRNGKey(5), full['readout_state'].shape)
  fresh = apply(
      params,
      _slice_frames(outputs, slice(2, None)),
      query_xy,
      query_frame - 2,
      readout_state=other_state,
  )
  for key in ('position', 'visibility_logit', 'certainty_logit'):
    np.testing.assert_allclose(full[key][:, :, 2:], fresh[key], rtol=1e-5, atol=1e-5)
  # An incoming state changes only the frames before the query frame.
  carried = apply(params, outputs, query_xy, query_frame, readout_state=other_state)
  np.testing.assert_allclose(carried['position'][:, :, 2:], full['position'][:, :, 2:], atol=1e-6)
  assert not np.allclose(carried['position'][:, :, :2], full['position'][:, :, :2], atol=1e-3)


def test_chunked_inference_equals_one_pass(point_setup):
  apply, params, outputs, query_xy, query_frame = point_setup
  whole = apply(params, outputs, query_xy, query_frame)
  split = 2
  first = apply(params, _slice_frames(outputs, slice(None, split)), query_xy, query_frame)
  second = apply(
      params,
      _slice_frames(outputs, slice(split, None)),
      query_xy,
      query_frame - split,
      readout_state=first['readout_state'],
  )
  for key in ('position', 'visibility_logit', 'certainty_logit'):
    np.testing.assert_allclose(
        jnp.concatenate([first[key], second[key]], axis=2), whole[key], rtol=1e-5, atol=1e-5
    )
  np.testing.assert_allclose(second['readout_state'], whole['readout_state'], rtol=1e-5, atol=1e-5)


def test_point_loss_matches_hand_computation_and_ignores_padding():
  # One example, one track, 3 frames, image 128 x 64 (H x W) -> x scales x4, y x2.
  target_points = np.array([[[[16.0, 64.0], [16.0, 64.0], [0.0, 0.0]]]], np.float32)
  occluded = np.array([[[False, False, True]]])
  position = np.array([[[[0.25, 0.5], [0.25 + 3 / 256, 0.5 + 4 / 256], [0.9, 0.9]]]], np.float32)
  outputs = {
      'position': jnp.asarray(position),
      'visibility_logit': jnp.array([[[2.0, 0.0, -1.0]]]),
      'certainty_logit': jnp.array([[[0.0, 1.0, 5.0]]]),
  }
  query_frame = jnp.array([[0]])
  loss, terms = heads.point_tracking_loss(
      outputs, target_points, occluded, query_frame, image_size=(128, 64)
  )
  bce = lambda logit, label: np.log1p(np.exp(-logit)) if label else np.log1p(np.exp(logit))
  # Frame 0 exact; frame 1 off by (3, 4) px -> distance 5 > δ = 4: 4 * (5 - 2) = 12.
  assert float(terms['position']) == pytest.approx((0.0 + 12.0) / 2, rel=1e-4)
  assert float(terms['visibility']) == pytest.approx(
      (bce(2.0, 1) + bce(0.0, 1) + bce(-1.0, 0)) / 3, rel=1e-5
  )
  # Both visible errors (0 and 5 px) are below the 6 px certainty threshold.
  assert float(terms['certainty']) == pytest.approx((bce(0.0, 1) + bce(1.0, 1)) / 2, rel=1e-5)
  terms = {k: float(v) for k, v in terms.items()}
  assert float(loss) == pytest.approx(
      0.05 * terms['position'] + terms['visibility'] + terms['certainty'], rel=1e-6
  )

  # A padding example and a padding track full of NaNs change nothing.
  pad = lambda x, value: np.concatenate(
      [np.concatenate([x, np.full_like(x, value)], axis=1)] * 2, axis=0
  )
  padded_outputs = {k: jnp.asarray(pad(np.asarray(v), 0.3)) for k, v in outputs.items()}
  padded_loss, _ = heads.point_tracking_loss(
      padded_outputs,
      pad(target_points, np.nan),
      pad(occluded, False),
      jnp.zeros((2, 2), jnp.int32),
      image_size=(128, 64),
      tracks_valid=np.array([[True, False], [True, False]]),
      mask=np.array([True, False]),
  )
  assert float(padded_loss) == pytest.approx(float(loss), rel=1e-6)

  # Frames before the query frame are not supervised; nothing supervised -> 0, not NaN.
  late_loss, late_terms = heads.point_tracking_loss(
      outputs, target_points, occluded, jnp.array([[3]]), image_size=(128, 64)
  )
  assert float(late_loss) == 0.0 and all(float(v) == 0.0 for v in late_terms.values())


def test_depth_and_box_losses_match_numpy_and_are_mask_weighted():
  rng = np.random.default_rng(0)
  gt = rng.uniform(0.5, 30.0, (3, 2, 4, 4, 1)).astype(np.float32)
  pred = rng.normal(size=gt.shape).astype(np.float32)
  valid = rng.uniform(size=gt.shape) < 0.7
  mask = np.array([True, True, False])
  gt[2] = np.nan
  loss = heads.depth_loss(pred, gt, valid=valid, mask=mask)
  keep = valid & mask[:, None, None, None, None]
  np.testing.assert_allclose(loss, np.mean((pred[keep] - np.log(gt[keep])) ** 2), rtol=1e-5)
  np.testing.assert_allclose(heads.log_depth_to_depth(np.log(gt[0])), gt[0], rtol=1e-5)

  gt_boxes = np.tile(np.array([0.0, 0.0, 0.4, 0.2], np.float32), (2, 3, 2, 1))
  pred_boxes = gt_boxes.copy()
  pred_boxes[0, 1, 0] = [0.0, 0.1, 0.4, 0.3]  # L1 0.2, IoU 1/3
  pred_boxes[0, 2, 1] = [0.5, 0.5, 0.9, 0.9]  # invalid frame: ignored
  gt_boxes[1] = np.nan  # padding example
  boxes_valid = np.ones((2, 3, 2), bool)
  boxes_valid[0, 2, 1] = False
  total, terms = heads.box_tracking_loss(
      pred_boxes, gt_boxes, boxes_valid, mask=np.array([True, False]), iou_weight=0.5
  )
  assert float(terms['l1']) == pytest.approx(0.2 / 5, rel=1e-5)  # 5 supervised entries
  assert float(terms['iou']) == pytest.approx((2 / 3) / 5, rel=1e-5)
  assert float(total) == pytest.approx(0.2 / 5 + 0.5 * (2 / 3) / 5, rel=1e-5)



def test_box_loss_gradient_is_finite_for_a_nearly_empty_box_of_an_absent_object():
  """Anchored on an absent object's zero box, the prediction is nearly empty; found as a
  NaN gradient in a real readout run (the loss itself stayed finite)."""
  gt_boxes = np.zeros((1, 2, 2, 4), np.float32)
  gt_boxes[:, :, 0] = [0.1, 0.1, 0.5, 0.5]
  boxes_valid = np.array([[[True, False], [True, False]]])
  # Sides one float32 ulp long: area 5e-23, whose square underflows in IoU's gradient.
  low = np.float32(1e-4)
  high = np.nextafter(low, np.float32(1))
  pred_boxes = jnp.asarray(gt_boxes).at[:, :, 1].set([low, low, high, high])
  grads = jax.grad(lambda p: heads.box_tracking_loss(p, gt_boxes, boxes_valid,
                                                        iou_weight=1.0)[0])(pred_boxes)
  assert np.all(np.isfinite(grads))
  np.testing.assert_array_equal(grads[:, :, 1], 0.0)

def test_anchored_sigmoid_golden_values():
  anchor = jnp.array([0.25, 0.5, 0.0, 1.0])
  np.testing.assert_allclose(
      heads.anchored_sigmoid(jnp.zeros(4), anchor), [0.25, 0.5, 1e-4, 1 - 1e-4], rtol=1e-5)
  # logit(0.25) + log(3) = 0 -> 0.5; logit(0.5) - log(3) -> 0.25.
  np.testing.assert_allclose(
      heads.anchored_sigmoid(jnp.array([np.log(3.0), -np.log(3.0), 0, 0]), anchor)[:2],
      [0.5, 0.25], rtol=1e-5)


def test_untrained_anchored_heads_predict_the_never_moving_track():
  """Zero-initialised offsets: every frame repeats the query point / the query box."""
  outputs = _moog_outputs((2,))
  query_xy = jax.random.uniform(jax.random.PRNGKey(1), (2, 3, 2))
  query_frame = jnp.array([[0, 1, 3], [0, 2, 4]])
  point_head = heads.PointReadout(anchor_to_query=True, **TINY_RECURRENT)
  params = jit(point_head.init)(jax.random.PRNGKey(2), outputs, query_xy, query_frame)
  position = jit(point_head.apply)(params, outputs, query_xy, query_frame)['position']
  np.testing.assert_allclose(
      position, jnp.broadcast_to(query_xy[:, :, None], position.shape), atol=1e-6)

  boxes = jnp.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.3, 0.4, 1.0]]] * 2)
  box_head = heads.BoxReadout(anchor_to_query=True, **TINY_RECURRENT)
  box_params = jit(box_head.init)(jax.random.PRNGKey(0), outputs, boxes)
  predicted = jit(box_head.apply)(box_params, outputs, boxes)['boxes']
  expected = jnp.clip(jnp.broadcast_to(boxes[:, None], predicted.shape), 1e-4, 1 - 1e-4)
  np.testing.assert_allclose(predicted, expected, atol=1e-6)

  # Unanchored (upstream) heads start wherever their random output layer points.
  free_head = heads.PointReadout(**TINY_RECURRENT)
  free_params = jit(free_head.init)(jax.random.PRNGKey(2), outputs, query_xy, query_frame)
  free = jit(free_head.apply)(free_params, outputs, query_xy, query_frame)['position']
  assert np.abs(free - query_xy[:, :, None]).mean() > 0.05


@pytest.mark.parametrize('anchor_to_query', [False, True])
def test_point_readout_learns_toy_tracking_task(anchor_to_query):
  """The features hold a moving point's position; the head must learn to read it out."""
  num_frames, num_tracks, batch_size = 4, 1, 8
  head = heads.PointReadout(anchor_to_query=anchor_to_query, **TINY_RECURRENT)

  def make_batch(key):
    start_key, velocity_key, noise_key = jax.random.split(key, 3)
    shape = (batch_size, num_tracks, 2)
    start = jax.random.uniform(start_key, shape, minval=0.2, maxval=0.8)
    velocity = jax.random.uniform(velocity_key, shape, minval=-0.08, maxval=0.08)
    tracks = start[:, :, None] + velocity[:, :, None] * jnp.arange(num_frames)[:, None]
    # The frame-t token holds the point's start and its position at t, scaled to [-2, 2].
    tokens = jnp.concatenate([jnp.broadcast_to(start[:, :, None], tracks.shape), tracks], -1)
    tokens = einops.rearrange(tokens, 'b n t c -> b t n c') * 4.0 - 2.0
    tokens += 0.01 * jax.random.normal(noise_key, tokens.shape)
    features = jnp.concatenate([tokens, jnp.zeros_like(tokens)], axis=-1)  # d = 8
    return {'states_concat': features}, start, tracks * 64.0

  occluded = jnp.zeros((batch_size, num_tracks, num_frames), bool)
  query_frame = jnp.zeros((batch_size, num_tracks), jnp.int32)
  outputs, start, targets = make_batch(jax.random.PRNGKey(0))
  params = jit(head.init)(jax.random.PRNGKey(1), outputs, start, query_frame)
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(params)

  def loss_fn(params, outputs, start, targets):
    out = head.apply(params, outputs, start, query_frame)
    return heads.point_tracking_loss(out, targets, occluded, query_frame, image_size=(64, 64))

  @jit
  def train_step(params, opt_state, key):
    outputs, start, targets = make_batch(key)
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, outputs, start, targets)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, terms['position']

  # Every step draws fresh tracks, so the loss before each update measures held-out data.
  position_losses = []
  for step in range(250):
    params, opt_state, position_loss = train_step(params, opt_state, jax.random.PRNGKey(step))
    position_losses.append(float(position_loss))
  final = np.mean(position_losses[-10:])
  # Reading out only the start position (the anchored head's starting point) leaves
  # about 90. Measured: unanchored 410 -> 20, anchored 98 -> 17 (it leaves the
  # never-moving start after ~150 steps).
  assert final < 45, (position_losses[0], final)


def _good_readout_batch():
  rng = np.random.default_rng(0)
  occluded = np.zeros((2, 3, 4), bool)
  occluded[0, 1, 2:] = True
  return {
      'video': np.zeros((2, 4, 32, 48, 3), np.float32),
      'query_points': np.array([[[0, 5.0, 7.0]] * 3, [[1, 31.5, 47.5]] * 3], np.float32),
      'target_points': rng.uniform(0, 32, (2, 3, 4, 2)).astype(np.float32),
      'occluded': occluded,
      'tracks_valid': np.ones((2, 3), bool),
      'boxes': np.tile(np.array([0.1, 0.2, 0.5, 0.6], np.float32), (2, 4, 5, 1)),
      'boxes_valid': np.ones((2, 4, 5), bool),
      '_mask': np.array([True, True]),
  }


@pytest.mark.parametrize(
    'corrupt, message',
    [
        (lambda b: b['query_points'].__setitem__((0, 1, 0), 4.0), 'query frame outside'),
        (lambda b: b['query_points'].__setitem__((0, 1, 0), -1.0), 'query frame outside'),
        (lambda b: b['query_points'].__setitem__((1, 0, 1), 33.0), 'y outside'),
        (lambda b: b['query_points'].__setitem__((1, 0, 2), -0.5), 'x outside'),
        (lambda b: b['query_points'].__setitem__((1, 0, 2), np.nan), 'non-finite'),
        (lambda b: b['occluded'].__setitem__((1, 2), True), 'never visible'),
        (lambda b: b['boxes'].__setitem__((0, 1, 2), [0.6, 0.2, 0.5, 0.6]), 'ymin <= ymax'),
        (lambda b: b['boxes'].__setitem__((0, 1, 2), [0.1, 0.2, 0.5, 1.2]), r'\[0, 1\]'),
    ],
)
def test_validate_readout_batch_rejects_bad_inputs(corrupt, message):
  batch = _good_readout_batch()
  heads.validate_readout_batch(batch)
  corrupt(batch)
  with pytest.raises(ValueError, match=message):
    heads.validate_readout_batch(batch)
  # The same defect on a padding example or a padding track is fine.
  batch['_mask'][:] = False
  heads.validate_readout_batch(batch)


def test_feature_selection():
  outputs = _moog_outputs((2,))
  without_concat = {k: v for k, v in outputs.items() if k != 'states_concat'}
  np.testing.assert_array_equal(
      heads.select_features(without_concat, 'concat'), outputs['states_concat']
  )
  assert heads.select_features(outputs, 'corrected') is outputs['states_corrected']
  with pytest.raises(ValueError, match='features must be one of'):
    heads.select_features(outputs, 'both')


def test_query_point_conversions_round_trip():
  query_points = jnp.array([[[3.0, 16.0, 8.0]]])  # (t, y, x) on a 32 x 64 (H x W) frame
  query_xy, query_frame = heads.normalise_query_points(query_points, (32, 64))
  np.testing.assert_allclose(query_xy, [[[0.125, 0.5]]])
  assert query_frame.dtype == jnp.int32 and int(query_frame[0, 0]) == 3
  np.testing.assert_allclose(heads.positions_to_pixels(query_xy, (32, 64)), [[[8.0, 16.0]]])


# ----------------------------------------------------------------------------------------
# Correlation trackers.
# ----------------------------------------------------------------------------------------


class _GivenMapsPoints(heads.CorrelationPointReadout):
  """The point tracker on feature maps given as input (no decoder)."""

  def feature_maps(self, moog_outputs):
    return moog_outputs['maps']


class _GivenMapsBoxes(heads.CorrelationBoxReadout):

  def feature_maps(self, moog_outputs):
    return moog_outputs['maps']


def _shifted_maps(shifts, size=8, channels=4, seed=0):
  """Unit-norm random maps [1, T, size, size, C]; frame t is frame 0 rolled by shifts[t]."""
  base = heads._l2_normalise(jax.random.normal(jax.random.PRNGKey(seed),
                                                  (size, size, channels)))
  frames = [jnp.roll(base, shift, axis=(0, 1)) for shift in shifts]  # (dy, dx) cells.
  return {'maps': jnp.stack(frames)[None]}


def test_sample_maps_is_bilinear_and_exact_at_cell_centres():
  ys, xs = jnp.meshgrid(jnp.arange(4.0), jnp.arange(6.0), indexing='ij')
  maps = jnp.stack([xs, ys, xs * ys], axis=-1)[None]  # [T=1, 4, 6, 3]
  xy = jnp.array([[[0.5 / 6, 0.5 / 4]], [[2.5 / 6, 3.5 / 4]], [[1.75 / 6, 1.0 / 4]]])
  sampled = heads.sample_maps(maps, xy)  # [N=3, T=1, 3]
  # (x, y) in cells = normalised * size - 0.5; bilinear reproduces x, y and, between four
  # cells, x*y only at cell centres (it is bilinear in x and y separately: exact too).
  np.testing.assert_allclose(sampled[:, 0], [[0, 0, 0], [2, 3, 6], [1.25, 0.5, 0.625]],
                             atol=1e-6)
  # Outside the outermost centres the position is clamped to the border cell.
  np.testing.assert_allclose(heads.sample_maps(maps, jnp.array([[[0.0, 1.0]]]))[0, 0],
                             [0, 3, 0], atol=1e-6)


def test_box_coverage_golden_values():
  coverage = heads.box_coverage(jnp.array([[0.0, 0.0, 0.5, 0.3]]), 4, 4)[0]
  np.testing.assert_allclose(coverage, [[1, 0.2, 0, 0], [1, 0.2, 0, 0], [0, 0, 0, 0],
                                        [0, 0, 0, 0]], atol=1e-6)


def test_window_soft_argmax_ignores_mass_outside_the_window():
  logits = jnp.full((8, 8), -10.0).at[2, 3].set(5.0).at[2, 4].set(5.0).at[7, 7].set(4.9)
  # Two equal cells around (x, y) = (3.5, 2) cells; the far cell is outside radius 1.
  np.testing.assert_allclose(heads.window_soft_argmax(logits, 1) * 8 - 0.5, [3.5, 2.0],
                             atol=1e-4)
  assert abs(float(heads.window_soft_argmax(logits, 7)[0]) * 8 - 0.5 - 3.5) > 0.5


def test_point_tracker_follows_shifted_content_exactly():
  """Content rolled by whole cells moves the match by exactly that many cells."""
  shifts = [(0, 0), (0, 2), (1, -1), (0, 0)]
  maps = _shifted_maps(shifts)
  head = _GivenMapsPoints(map_size=8, map_channels=4)
  query_xy = jnp.array([[[3.5 / 8, 4.5 / 8], [6.5 / 8, 1.5 / 8]]])
  query_frame = jnp.array([[0, 1]])
  params = head.init(jax.random.PRNGKey(0), maps, query_xy, query_frame)
  params = jax.tree.map(lambda x: x, params)
  params['params']['log_temperature'] = jnp.log(100.0)  # Sharp, as training makes it.
  out = head.apply(params, maps, query_xy, query_frame, with_logits=True)
  cells = out['position'][0] * 8 - 0.5
  np.testing.assert_allclose(cells[0], [[3, 4], [5, 4], [2, 5], [3, 4]], atol=1e-3)
  # Track 1 is queried on frame 1 (shifted by 2 in x): frame 0 is before its query and
  # keeps the query position; later frames move relative to frame 1.
  np.testing.assert_allclose(cells[1], [[6, 1], [6, 1], [3, 2], [4, 1]], atol=1e-3)
  assert out['correlation_logits'].shape == (1, 2, 4, 8, 8)
  assert out['readout_state'].shape == (1, 2, 4 + 2)


def test_point_tracker_in_slices_equals_one_pass():
  maps = _shifted_maps([(0, 0), (0, 1), (1, 1), (2, 1), (2, 2), (2, 3)])
  head = _GivenMapsPoints(map_size=8, map_channels=4)
  query_xy = jax.random.uniform(jax.random.PRNGKey(3), (1, 3, 2))
  query_frame = jnp.array([[0, 2, 4]])
  params = head.init(jax.random.PRNGKey(0), maps, query_xy, query_frame)
  whole = head.apply(params, maps, query_xy, query_frame)
  first = head.apply(params, {'maps': maps['maps'][:, :3]}, query_xy, query_frame)
  second = head.apply(params, {'maps': maps['maps'][:, 3:]}, query_xy, query_frame - 3,
                      readout_state=first['readout_state'])
  for key in ('position', 'visibility_logit', 'certainty_logit'):
    np.testing.assert_allclose(jnp.concatenate([first[key], second[key]], axis=2),
                               whole[key], atol=1e-6)


def test_box_tracker_translates_the_query_box_with_its_content():
  maps = _shifted_maps([(0, 0), (1, -1), (-2, 0)])
  head = _GivenMapsBoxes(map_size=8, map_channels=4)
  boxes = jnp.array([[[2 / 8, 3 / 8, 4 / 8, 5 / 8]]])  # 2 x 2 cells.
  params = head.init(jax.random.PRNGKey(0), maps, boxes)
  params['params']['log_temperature'] = jnp.log(1000.0)
  tracked = head.apply(params, maps, boxes)['boxes'][0, :, 0] * 8
  np.testing.assert_allclose(tracked, [[2, 3, 4, 5], [3, 2, 5, 4], [0, 3, 2, 5]], atol=1e-3)


def test_correlation_loss_matches_hand_computation():
  logits = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 3, 4, 4))
  # Track 0 at cell (x=1, y=2) exactly, then between cells (x=1.5, y=0): raster pixels of
  # an 8 x 8 image on a 4 x 4 map are 2 pixels per cell (centre at 2 * cell + 1).
  target = jnp.array([[[[3.0, 5.0], [4.0, 1.0], [3.0, 5.0]], [[1.0, 1.0]] * 3]])
  occluded = jnp.array([[[False, False, True], [False, False, False]]])
  query_frame = jnp.array([[0, 1]])
  valid = jnp.array([[True, False]])
  loss = heads.correlation_loss(logits, target, occluded, query_frame, image_size=(8, 8),
                                   tracks_valid=valid)
  log_p = jax.nn.log_softmax(logits.reshape(1, 2, 3, 16), axis=-1).reshape(logits.shape)
  expected = -(log_p[0, 0, 0, 2, 1] + 0.5 * (log_p[0, 0, 1, 0, 1] + log_p[0, 0, 1, 0, 2])) / 2
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
