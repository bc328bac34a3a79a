"""Tests for moog.motion_guided: motion-guided encoder-token selection for MooG."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import moog_motion_tiny
from moog import model as moog_model
from moog import motion_guided
from moog import task as moog_task
from videolib import cost

jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})
STRIDE = 4  # tiny_model_config: strides (2, 2); 16 x 16 frames -> 4 x 4 = 16 tokens.


def _motion_config(mode, drop_ratio=0.5, threshold=0.02, gather=False):
  config = motion_guided.default_config()
  config.update(mode=mode, drop_ratio=drop_ratio, threshold=threshold, gather=gather)
  return config


def _square_video(corners, size=4, frame_size=16):
  """[1, T, H, W, 3] black frames with a white `size` square at each (row, col) corner."""
  video = np.zeros((1, len(corners), frame_size, frame_size, 3), np.float32)
  for t, (row, col) in enumerate(corners):
    video[0, t, row:row + size, col:col + size] = 1.0
  return jnp.asarray(video)


def _touched_tokens(video, t):
  """Raster indices of the tokens whose s x s footprint contains a changed pixel."""
  changed = np.any(np.asarray(video[0, t]) != np.asarray(video[0, t - 1]), axis=-1)
  rows, cols = np.nonzero(changed)
  return set((rows // STRIDE * (16 // STRIDE) + cols // STRIDE).tolist())


def _kept(mask, t):
  return set(np.flatnonzero(np.asarray(mask[0, t])).tolist())


def test_scores_are_mean_absolute_difference_over_each_footprint():
  video = _square_video([(12, 4), (12, 8)])
  scores = motion_guided.token_motion_scores(video, STRIDE)
  assert scores.shape == (1, 2, 16)
  assert np.all(np.isinf(scores[0, 0]))
  # The square leaves token 13 (cols 4..7) and enters token 14 (cols 8..11): every
  # pixel and channel of both footprints changes by 1.
  expected = np.zeros(16)
  expected[[13, 14]] = 1.0
  np.testing.assert_array_equal(scores[0, 1], expected)


def test_ratio_keeps_the_moving_square_then_the_lowest_raster_fill():
  # Moves right by one token, then stands still.
  video = _square_video([(12, 4), (12, 8), (12, 8)])
  mask = motion_guided.encoder_token_mask(video, STRIDE, _motion_config('ratio', 0.5))
  assert mask.shape == (1, 3, 16) and mask.dtype == jnp.bool_
  assert _kept(mask, 0) == set(range(16))  # Frame 0 in full.
  assert _touched_tokens(video, 1) == {13, 14}
  assert _kept(mask, 1) == {13, 14} | set(range(6))  # K = 8: the square + fill 0..5.
  assert _kept(mask, 2) == set(range(8))  # Static frame: deterministic fill 0..7.


def test_threshold_keeps_exactly_the_touched_footprints_of_an_unaligned_square():
  # A 3 x 3 square straddling token borders, moving by (1, 2) pixels, then still.
  video = _square_video([(5, 6), (6, 8), (6, 8)], size=3)
  mask = motion_guided.encoder_token_mask(video, STRIDE, _motion_config('threshold', threshold=0.0))
  touched = _touched_tokens(video, 1)
  assert touched == {5, 6, 10}
  assert _kept(mask, 0) == set(range(16))
  assert _kept(mask, 1) == touched
  assert _kept(mask, 2) == set()
  # Changed pixels per 16-pixel footprint: token 5: 6, token 6: 5, token 10: 3 (row 8
  # only). A threshold between 3/16 and 5/16 drops token 10 alone.
  scores = motion_guided.token_motion_scores(video, STRIDE)
  np.testing.assert_allclose(scores[0, 1, [5, 6, 10]], [6 / 16, 5 / 16, 3 / 16])
  mask = motion_guided.encoder_token_mask(video, STRIDE, _motion_config('threshold', threshold=0.25))
  assert _kept(mask, 1) == {5, 6}


def test_ratio_mode_rejects_bad_ratios_and_off_gives_no_mask():
  video = _square_video([(0, 0), (0, 4)])
  assert motion_guided.encoder_token_mask(video, STRIDE, _motion_config('off')) is None
  with pytest.raises(ValueError, match='drop_ratio'):
    motion_guided.validate_config(_motion_config('ratio', drop_ratio=1.0), 'moog')
  with pytest.raises(ValueError, match='gather'):
    motion_guided.validate_config(_motion_config('threshold', gather=True), 'moog')
  with pytest.raises(ValueError, match='gather'):
    motion_guided.validate_config(_motion_config('ratio', gather=True), 'grid')


def _task_config(**motion_fields):
  config = moog_motion_tiny.get_config()
  config.model = moog_model.tiny_model_config()
  config.data.resolution = 16
  config.data.num_frames = 3
  if motion_fields:
    config.motion_guided.update(motion_fields)
  return config


@pytest.fixture(scope='module')
def tasks_and_params():
  """Tasks for every variant sharing one parameter set (the trees are identical)."""
  variants = {
      'plain': moog_model.tiny_model_config(),
      'off': dict(mode='off'),
      'ratio': dict(mode='ratio', gather=False),
      'gather': dict(mode='ratio', gather=True),
  }
  tasks = {}
  for name, fields in variants.items():
    config = _task_config(**fields) if name != 'plain' else _task_config()
    if name == 'plain':
      del config.motion_guided
    task = moog_task.MooGTask(config)
    task.validate_config(config)
    tasks[name] = task
  video = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 16, 16, 3))
  # Half of each frame moves, half is static, so the selection is not trivial.
  video = video.at[:, :, :, 8:].set(video[:, :1, :, 8:])
  batch = {'video': video, '_mask': jnp.ones((2,), bool)}
  params = jit(tasks['plain'].init)(jax.random.PRNGKey(1), batch)
  for task in tasks.values():
    assert (jax.tree.structure(jit(task.init)(jax.random.PRNGKey(1), batch))
            == jax.tree.structure(params))
  return tasks, params, batch


def test_off_is_bit_identical_to_plain_moog(tasks_and_params):
  tasks, params, batch = tasks_and_params
  rng = jax.random.PRNGKey(2)
  for fn in ('loss_fn', 'eval_fn'):
    plain = jit(getattr(tasks['plain'], fn))(params, batch, rng)
    off = jit(getattr(tasks['off'], fn))(params, batch, rng)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(off)):
      np.testing.assert_array_equal(a, b)


def test_ratio_task_passes_the_mask_and_changes_the_prediction(tasks_and_params):
  tasks, params, batch = tasks_and_params
  model, rng = tasks['ratio'].model, jax.random.PRNGKey(2)
  mask = motion_guided.encoder_token_mask(batch['video'], STRIDE, tasks['ratio'].motion_config)
  expected = moog_model.l2_loss(model.apply({'params': params}, batch['video'], train=True,
                                            rngs={'default': rng}, encoder_token_mask=mask))
  loss, _ = jit(tasks['ratio'].loss_fn)(params, batch, rng)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)  # Jitted vs eager rounding.
  plain_loss, _ = jit(tasks['plain'].loss_fn)(params, batch, rng)
  assert abs(loss - plain_loss) > 1e-4


def test_gather_equals_mask(tasks_and_params):
  tasks, params, batch = tasks_and_params
  rng = jax.random.PRNGKey(2)
  # Evaluation draws only the initial state, from the same first rng split in both paths.
  masked = jit(tasks['ratio'].eval_fn)(params, batch, rng)
  gathered = jit(tasks['gather'].eval_fn)(params, batch, rng)
  for a, b in zip(jax.tree.leaves(masked), jax.tree.leaves(gathered)):
    np.testing.assert_allclose(a, b, rtol=1e-5)
  # Model level, with a carried state: every output, frame 0 (full) included.
  state = jax.random.normal(jax.random.PRNGKey(3), (2, 8, 32))
  state = state / jnp.linalg.norm(state, axis=-1, keepdims=True) * jnp.sqrt(32.0)
  mask = motion_guided.encoder_token_mask(batch['video'], STRIDE, tasks['ratio'].motion_config)
  masked = tasks['ratio'].model.apply({'params': params}, batch['video'], train=False,
                                      state=state, encoder_token_mask=mask)
  gathered = tasks['gather'].model.apply({'params': params}, batch['video'], train=False,
                                         state=state)
  assert masked.keys() == gathered.keys()
  for name in masked:
    np.testing.assert_allclose(masked[name], gathered[name], rtol=1e-5, atol=1e-5,
                               err_msg=name)


def test_corrector_cost_at_paper_sizes():
  config = moog_model.paper_movi_model_config()
  plain = motion_guided.corrector_gmacs_for_config(config, 128)
  guided = motion_guided.corrector_gmacs_for_config(config, 128, drop_ratio=0.5)
  # n = m = 1024, d = e = q = 512, mlp 2048, 2 layers: per layer SA 2.147, CA 2.147
  # (of which 1.611 scale with the encoder tokens), MLP 2.147 GMACs.
  assert plain == pytest.approx(2 * 6 * 2**30 / 1e9)
  # Dropping half the keys removes 0.805 of 6.442 GMACs per layer: 87.5% remains, not
  # the <= 55% a naive "half the tokens" estimate suggests (SA and MLP are unaffected).
  assert guided / plain == pytest.approx(0.875)


def test_analytic_count_tracks_xla_for_the_corrector_alone():
  config = moog_model.tiny_model_config()
  corrector = moog_model.build_moog(config).corrector
  queries = jnp.zeros((1, 8, 32))

  def xla_gmacs(num_keys):
    keys = jnp.zeros((1, num_keys, 32))
    params = corrector.init(jax.random.PRNGKey(0), queries, keys)
    return cost.xla_flops(corrector.apply, params, queries, keys) / 2 / 1e9

  analytic = lambda m: motion_guided.corrector_gmacs(
      num_state_tokens=8, state_dim=32, num_encoder_tokens=m, encoder_dim=32, num_layers=1,
      qkv_size=32, mlp_dim=64)
  # The keys' share of the cost: XLA and the analytic count agree on the drop.
  xla_drop = xla_gmacs(64) - xla_gmacs(32)
  analytic_drop = analytic(64) - analytic(32)
  assert xla_drop == pytest.approx(analytic_drop, rel=0.15)


def test_config_variants():
  for variant, (mode, gather) in {None: ('ratio', False), 'gather': ('ratio', True),
                                  'threshold': ('threshold', False),
                                  'off': ('off', False)}.items():
    config = moog_motion_tiny.get_config(variant)
    assert (config.motion_guided.mode, config.motion_guided.gather) == (mode, gather)
    task = moog_task.MooGTask(config)
    task.validate_config(config)
    assert isinstance(task.model, motion_guided.GatheredMotionGuidedMooG) == gather
  with pytest.raises(ValueError, match='must be one of'):
    moog_motion_tiny.get_config('sparse')
