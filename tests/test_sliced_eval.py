"""Slice-wise evaluation carries the states and equals one pass over the whole video."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import moog_readout_tiny
from moog import model as moog_model
from moog.readouts import sliced_eval
from moog.readouts import task as readout_task

jit = functools.partial(jax.jit, static_argnames=('slice_frames', 'reverse'),
                        compiler_options={'xla_backend_optimization_level': 0})
NUM_FRAMES = 6


def test_scan_slices_carries_the_state_of_a_running_sum():
  inputs = {'x': jnp.arange(2 * 6, dtype=jnp.float32).reshape(2, 6)}

  def running_sum(total, inputs_slice, start):
    sums = total[:, None] + jnp.cumsum(inputs_slice['x'], axis=1)
    return sums[:, -1], {'sum': sums, 'frame': start + jnp.arange(3)[None].repeat(2, 0)}

  total, outputs = sliced_eval.scan_slices(running_sum, jnp.zeros(2), inputs, 3)
  np.testing.assert_allclose(outputs['sum'], np.cumsum(inputs['x'], axis=1))
  np.testing.assert_array_equal(outputs['frame'], np.tile(np.arange(6), (2, 1)))
  np.testing.assert_allclose(total, [15.0, 51.0])
  with pytest.raises(ValueError, match='slice_frames=4 must be >= 1 and divide'):
    sliced_eval.scan_slices(running_sum, jnp.zeros(2), inputs, 4)


@pytest.fixture(scope='module')
def tiny_readout():
  """A tiny backbone and all three heads on a random 6-frame 16 x 16 batch."""
  config = moog_readout_tiny.get_config()
  config.model = moog_model.tiny_model_config()
  config.readout.update(width=16, num_heads=2, qkv_size=16, mlp_dim=32, num_fourier_bases=4)
  task = readout_task.ReadoutTask(config)
  rng = np.random.default_rng(0)
  batch = {
      'video': jnp.asarray(rng.uniform(size=(2, NUM_FRAMES, 16, 16, 3)), jnp.float32),
      'query_points': jnp.asarray(np.concatenate(
          [np.zeros((2, 3, 1)), rng.uniform(0, 16, (2, 3, 2))], -1), jnp.float32),
      'boxes': jnp.asarray(np.tile([0.1, 0.2, 0.5, 0.6], (2, NUM_FRAMES, 2, 1)), jnp.float32),
  }
  params = jax.jit(task.init)(jax.random.PRNGKey(0), batch)
  return task, params, batch


@pytest.mark.parametrize('reverse', [False, True])
def test_slices_equal_one_pass(tiny_readout, reverse):
  task, params, batch = tiny_readout
  # Query frames 0, 2 and 5: the resets of later tracks fall inside later slices.
  query_xy = batch['query_points'][..., 1:] / 16.0
  point_queries = (query_xy, jnp.array([[0, 2, 5], [0, 2, 5]]))
  run = jit(lambda params, batch, slice_frames, reverse: task.run(
      params, batch, jax.random.PRNGKey(1), point_queries=point_queries,
      slice_frames=slice_frames, reverse=reverse))
  whole = run(params, batch, slice_frames=0, reverse=reverse)
  assert whole['log_depth'].shape == (2, NUM_FRAMES, 16, 16, 1)
  assert whole['position'].shape == (2, NUM_FRAMES, 3, 2)
  assert whole['boxes'].shape == (2, NUM_FRAMES, 2, 4)
  for slice_frames in (1, 2, 3):
    sliced = run(params, batch, slice_frames=slice_frames, reverse=reverse)
    for name in ('position', 'visibility_logit', 'certainty_logit', 'boxes', 'log_depth'):
      np.testing.assert_allclose(sliced[name], whole[name], rtol=1e-4, atol=1e-5,
                                 err_msg=f'{name}, slice_frames={slice_frames}')


def test_motion_guided_readouts_see_the_selection_and_slices_equal_one_pass(tiny_readout):
  """Readouts on a motion-guided backbone: each slice's first frame is scored against the
  previous slice's last frame, so slices still equal one pass; the selection matters."""
  plain_task, params, batch = tiny_readout
  config = moog_readout_tiny.get_config()
  config.model = moog_model.tiny_model_config()
  config.readout.update(width=16, num_heads=2, qkv_size=16, mlp_dim=32, num_fourier_bases=4)
  config.motion_guided.update(mode='ratio', drop_ratio=0.75)
  task = readout_task.ReadoutTask(config)
  def run(task, slice_frames):
    return jit(lambda params, batch, slice_frames, reverse: task.run(
        params, batch, jax.random.PRNGKey(1), heads=('depth', 'boxes'),
        slice_frames=slice_frames))(params, batch, slice_frames=slice_frames, reverse=False)

  whole = run(task, 0)
  np.testing.assert_allclose(run(task, 2)['boxes'], whole['boxes'], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(run(task, 3)['log_depth'], whole['log_depth'], rtol=1e-4,
                             atol=1e-5)
  plain = run(plain_task, 0)
  # Frame 0 is always seen in full; later frames differ once tokens are hidden.
  np.testing.assert_allclose(whole['log_depth'][:, 0], plain['log_depth'][:, 0], rtol=1e-5,
                             atol=1e-6)
  assert np.abs(whole['log_depth'][:, 1:] - plain['log_depth'][:, 1:]).max() > 1e-3
