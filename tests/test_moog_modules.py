"""Tests for moog/modules.py: Fourier features, attention, transformers, encoder, lattice."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moog import modules


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def random_variables(module, rng, *args, **kwargs):
  """Random variables shaped like `module.init(rng, *args)`'s, from numpy.

  The tests check the modules' computation, not Flax's initialisers, and XLA takes
  seconds on CPU to compile a few dozen truncated-normal initialisers; `eval_shape`
  gives the same tree for free. Kernels ~ N(0, 1 / prod(shape[:-1])), norm scales
  ~ 1 + 0.1 N(0, 1) and biases ~ 0.1 N(0, 1) (non-trivial, so tests see them).
  """
  shapes = jax.eval_shape(functools.partial(module.init, **kwargs), rng, *args)
  np_rng = np.random.default_rng(int(jax.random.randint(rng, (), 0, 2**31 - 1)))

  def sample(path, leaf):
    noise = np_rng.standard_normal(leaf.shape).astype(np.float32)
    name = path[-1].key
    if name == 'kernel':
      return jnp.asarray(noise / np.sqrt(np.prod(leaf.shape[:-1])))
    return jnp.asarray(1.0 + 0.1 * noise if name == 'scale' else 0.1 * noise)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def _apply(module, variables, *args, **kwargs):
  """Jitted `module.apply`."""
  return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


# ---------------------------------------------------------------------------------------
# Fourier features.
# ---------------------------------------------------------------------------------------


def test_grid_coordinates_is_inclusive_ij_yx():
  grid = np.asarray(modules.grid_coordinates(3, 5))
  assert grid.shape == (3, 5, 2)
  np.testing.assert_allclose(grid[:, 0, 0], [-1.0, 0.0, 1.0])  # channel 0 = y, down rows
  np.testing.assert_allclose(grid[0, :, 1], [-1.0, -0.5, 0.0, 0.5, 1.0])  # channel 1 = x
  np.testing.assert_allclose(grid[:, 2, 1], 0.0)


def test_fourier_features_golden_values():
  # (y, x) = (0.5, -0.25), 2 bases: phases pi*[0.5, -0.25] (2^0) and pi*[1, -0.5] (2^1).
  features = modules.fourier_features(jnp.array([[0.5, -0.25]]), num_bases=2)
  r = np.sqrt(0.5)
  expected_sin = [1.0, -r, 0.0, -1.0]  # sin(pi/2), sin(-pi/4), sin(pi), sin(-pi/2)
  expected_cos = [0.0, r, -1.0, 0.0]  # cos of the same phases, same order
  np.testing.assert_allclose(features[0], expected_sin + expected_cos, atol=1e-6)


def test_fourier_features_widths():
  assert modules.fourier_features(jnp.zeros((7, 2)), 20).shape == (7, 80)
  assert modules.fourier_features(jnp.zeros((4, 4, 2)), 16).shape == (4, 4, 64)


@pytest.mark.parametrize('mode, width', [('project_add', 6), ('concat', 6 + 4 * 3)])
def test_grid_fourier_embedding(mode, width):
  embed = modules.GridFourierEmbedding(num_bases=3, mode=mode)
  features = jax.random.normal(jax.random.key(0), (2, 4, 5, 6))
  variables = random_variables(embed, jax.random.key(1), features)
  out = _apply(embed, variables, features)
  assert out.shape == (2, 4, 5, width)
  pe = modules.fourier_features(modules.grid_coordinates(4, 5), 3)
  if mode == 'concat':
    assert not variables
    np.testing.assert_allclose(out[1, ..., 6:], pe, atol=1e-6)
  else:
    assert _count(variables) == 12 * 6 + 6  # Dense(4 * bases -> C) with bias
    dense = variables['params']['projection']
    expected = features + pe @ dense['kernel'] + dense['bias']
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Attention.
# ---------------------------------------------------------------------------------------


def _numpy_attention(params, inputs_q, inputs_kv, key_mask=None):
  """Independent float64 reference for `modules.Attention`."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  q = np.einsum('qd,dhk->qhk', inputs_q, p['query']['kernel'])
  k = np.einsum('md,dhk->mhk', inputs_kv, p['key']['kernel'])
  v = np.einsum('md,dhk->mhk', inputs_kv, p['value']['kernel'])
  rms = lambda x, s: x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-6) * s
  q, k = rms(q, p['query_norm']['scale']), rms(k, p['key_norm']['scale'])
  logits = np.einsum('qhk,mhk->hqm', q, k) / np.sqrt(q.shape[-1])
  if key_mask is not None:
    logits = np.where(key_mask, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  attended = np.einsum('hqm,mhk->qhk', weights, v)
  return np.einsum('qhk,hkd->qd', attended, p['output']['kernel']) + p['output']['bias']


def _random_attention(num_q=3, num_kv=5, d_q=6, d_kv=4, heads=2, qkv=8):
  attention = modules.Attention(num_heads=heads, qkv_size=qkv)
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  inputs_q = jax.random.normal(k1, (num_q, d_q))
  inputs_kv = jax.random.normal(k2, (num_kv, d_kv))
  params = random_variables(attention, k3, inputs_q, inputs_kv)['params']
  # Non-trivial norm scales and output bias, so the reference checks how they are used.
  params['query_norm']['scale'] = jnp.array([0.5, 1.5, 2.0, -1.0])
  params['key_norm']['scale'] = jnp.array([1.0, 0.3, -0.7, 2.5])
  params['output']['bias'] = jnp.linspace(-1.0, 1.0, d_q)
  return attention, params, inputs_q, inputs_kv


def test_attention_parameters_follow_the_spec():
  _, params, _, _ = _random_attention()
  shapes = jax.tree.map(lambda x: x.shape, params)
  assert shapes == {
      'query': {'kernel': (6, 2, 4)},  # no bias on q, k, v
      'key': {'kernel': (4, 2, 4)},
      'value': {'kernel': (4, 2, 4)},
      'query_norm': {'scale': (4,)},  # one head_dim scale shared by all heads
      'key_norm': {'scale': (4,)},
      'output': {'kernel': (2, 4, 6), 'bias': (6,)},
  }


def test_attention_matches_numpy():
  attention, params, inputs_q, inputs_kv = _random_attention()
  out = _apply(attention, {'params': params}, inputs_q, inputs_kv)
  expected = _numpy_attention(params, np.asarray(inputs_q, np.float64), inputs_kv)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_attention_key_mask_equals_removing_keys():
  attention, params, inputs_q, inputs_kv = _random_attention()
  apply = lambda kv, mask=None: _apply(attention, {'params': params}, inputs_q, kv, mask)
  np.testing.assert_array_equal(apply(inputs_kv, jnp.ones(5, bool)), apply(inputs_kv))
  mask = jnp.array([True, False, True, True, False])
  np.testing.assert_allclose(apply(inputs_kv, mask), apply(inputs_kv[mask]), atol=1e-6)
  expected = _numpy_attention(params, np.asarray(inputs_q, np.float64), inputs_kv, mask)
  np.testing.assert_allclose(apply(inputs_kv, mask), expected, rtol=1e-4, atol=1e-5)
  # No visible key at all: the attention contributes only its output bias.
  np.testing.assert_allclose(
      apply(inputs_kv, jnp.zeros(5, bool)), np.broadcast_to(params['output']['bias'], (3, 6))
  )


def test_attention_sows_weights():
  attention, params, inputs_q, inputs_kv = _random_attention()
  _, state = _apply(
      attention, {'params': params}, inputs_q, inputs_kv, mutable=['intermediates']
  )
  (weights,) = state['intermediates']['attention_weights']
  assert weights.shape == (2, 3, 5)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)


def _autodiff_attention(query, key, value, key_mask):
  """The attention core differentiated by JAX itself: what `explicit_attention` replaces."""
  return modules._softmax_attention(query, key, value, key_mask)  # pylint: disable=protected-access


@pytest.mark.parametrize('masked', [False, True])
def test_explicit_attention_gradients_equal_autodiff(masked):
  """The hand-written backward pass gives autodiff's gradients, also for the weights'
  cotangent, masked keys and a query row whose keys are all masked (batch 1)."""
  ks = jax.random.split(jax.random.key(3), 5)
  query, key, value = (jax.random.normal(k, (2, 3, 6, 8)) for k in ks[:3])
  key = key[..., :5, :] * 2.0  # Peaked weights: the softmax backward is not trivial.
  value = value[..., :5, :]
  mask = None
  if masked:
    mask = jnp.array([[True, False, True, True, False], [False] * 5])[:, None, None, :]
  # A loss on both outputs, so both cotangents reach the backward pass.
  probe_out = jax.random.normal(ks[3], (2, 3, 6, 8))
  probe_weights = jax.random.normal(ks[4], (2, 3, 6, 5))

  def loss(core, q, k, v):
    attended, weights = core(q, k, v, mask)
    return jnp.sum(attended * probe_out) + jnp.sum(weights * probe_weights)

  expected = jax.jit(jax.grad(functools.partial(loss, _autodiff_attention), (0, 1, 2)))(
      query, key, value)
  actual = jax.jit(jax.grad(functools.partial(loss, modules.explicit_attention), (0, 1, 2)))(
      query, key, value)
  for name, e, a in zip('qkv', expected, actual):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=2e-5, err_msg=name)
  assert float(jnp.max(jnp.abs(expected[0]))) > 0.1  # The comparison is not of zeros.
  if masked:  # No gradient reaches a fully masked row, or masked keys.
    np.testing.assert_array_equal(actual[0][1], 0.0)
    np.testing.assert_array_equal(actual[1][0, :, [1, 4]], 0.0)


@pytest.mark.parametrize('dtype,tolerance', [(jnp.float32, 2e-5), (jnp.bfloat16, 5e-2)])
def test_dot_product_attention_impl_equals_explicit(dtype, tolerance):
  """`impl='dot_product_attention'` computes the explicit path's outputs and gradients
  (XLA's implementation on CPU; cuDNN's on GPUs), and still sows weights when asked."""
  _, params, inputs_q, inputs_kv = _random_attention(num_q=7, num_kv=9)
  inputs_q = jnp.stack([inputs_q, -inputs_q])  # Batch 2: one row masked out entirely.
  inputs_kv = jnp.stack([inputs_kv, inputs_kv[::-1]])
  mask = jnp.array([[True, False, True, True, False, True, True, True, False], [False] * 9])

  def loss_and_grads(impl):
    attention = modules.Attention(num_heads=2, qkv_size=8, dtype=dtype, impl=impl)
    loss = lambda p: jnp.sum(jnp.sin(attention.apply({'params': p}, inputs_q, inputs_kv, mask)))
    return jax.jit(jax.value_and_grad(loss))(params)

  (expected, expected_grads), (actual, actual_grads) = map(
      loss_and_grads, ('explicit', 'dot_product_attention'))
  np.testing.assert_allclose(actual, expected, rtol=tolerance)
  for path, e in jax.tree_util.tree_leaves_with_path(expected_grads):
    a = functools.reduce(lambda t, k: t[k.key], path, actual_grads)
    np.testing.assert_allclose(a, e, rtol=tolerance, atol=tolerance, err_msg=str(path))
  fused = modules.Attention(num_heads=2, qkv_size=8, impl='dot_product_attention')
  _, state = _apply(fused, {'params': params}, inputs_q, inputs_kv, mutable=['intermediates'])
  assert state['intermediates']['attention_weights'][0].shape == (2, 2, 7, 9)


def test_attention_rejects_unknown_impl():
  attention = modules.Attention(num_heads=2, qkv_size=8, impl='flash')
  with pytest.raises(ValueError, match="impl must be one of"):
    random_variables(attention, jax.random.key(0), jnp.zeros((2, 4)), jnp.zeros((2, 4)))


def test_attention_rejects_indivisible_qkv():
  attention = modules.Attention(num_heads=3, qkv_size=8)
  with pytest.raises(ValueError, match='qkv_size'):
    random_variables(attention, jax.random.key(0), jnp.zeros((2, 4)), jnp.zeros((2, 4)))


# ---------------------------------------------------------------------------------------
# Transformer blocks and stacks.
# ---------------------------------------------------------------------------------------


def test_block_is_parallel_self_plus_cross_attention_then_mlp():
  block = modules.TransformerBlock(num_heads=2, qkv_size=8, mlp_dim=16)
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  queries = jax.random.normal(k1, (5, 6))
  inputs_kv = jax.random.normal(k2, (7, 4))
  params = random_variables(block, k3, queries, inputs_kv)['params']
  assert set(params) == {
      'attention_norm', 'self_attention', 'cross_attention', 'mlp_norm', 'mlp_in', 'mlp_out'
  }
  assert 'bias' not in params['attention_norm'] and 'bias' not in params['mlp_norm']

  layer_norm = lambda x, s: (x - x.mean(-1, keepdims=True)) / np.sqrt(
      x.var(-1, keepdims=True) + 1e-6
  ) * s
  attention = modules.Attention(num_heads=2, qkv_size=8)
  normed = layer_norm(queries, params['attention_norm']['scale'])
  updated = (
      queries
      + _apply(attention, {'params': params['self_attention']}, normed, normed)
      + _apply(attention, {'params': params['cross_attention']}, normed, inputs_kv)
  )
  hidden = layer_norm(updated, params['mlp_norm']['scale'])
  hidden = jax.nn.gelu(hidden @ params['mlp_in']['kernel'] + params['mlp_in']['bias'])
  expected = updated + hidden @ params['mlp_out']['kernel'] + params['mlp_out']['bias']
  np.testing.assert_allclose(_apply(block, {'params': params}, queries, inputs_kv), expected,
                             rtol=1e-4, atol=1e-5)


def test_cross_attention_only_block():
  block = modules.TransformerBlock(num_heads=2, qkv_size=8, mlp_dim=16, self_attention=False)
  params = random_variables(block, jax.random.key(0), jnp.zeros((3, 6)), jnp.zeros((4, 5)))['params']
  assert 'self_attention' not in params and 'cross_attention' in params
  with pytest.raises(ValueError, match='inputs_kv'):
    random_variables(block, jax.random.key(0), jnp.zeros((3, 6)))


@pytest.mark.parametrize('batch_shape', [(), (2,), (2, 3)])
def test_transformer_leading_batch_axes(batch_shape):
  transformer = modules.Transformer(num_layers=1, num_heads=2, qkv_size=8, mlp_dim=16)
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  queries = jax.random.normal(k1, batch_shape + (5, 6))
  inputs_kv = jax.random.normal(k2, batch_shape + (7, 4))
  variables = random_variables(transformer, k3, queries[(0,) * len(batch_shape)],
                               inputs_kv[(0,) * len(batch_shape)])
  out = _apply(transformer, variables, queries, inputs_kv)
  assert out.shape == batch_shape + (5, 6)
  last = (-1,) * len(batch_shape)
  np.testing.assert_allclose(
      out[last], _apply(transformer, variables, queries[last], inputs_kv[last]), atol=1e-5
  )


def test_transformer_flattens_token_axes_and_projects():
  transformer = modules.Transformer(
      num_layers=1, num_heads=2, qkv_size=8, mlp_dim=16, self_attention=False, output_size=3
  )
  queries = jax.random.normal(jax.random.key(0), (2, 4, 5, 6))  # [b, h, w, c]
  inputs_kv = jax.random.normal(jax.random.key(1), (2, 7, 4))
  variables = random_variables(transformer, jax.random.key(2), queries, inputs_kv, num_token_axes=2)
  out = _apply(transformer, variables, queries, inputs_kv, num_token_axes=2)
  flat = _apply(transformer, variables, queries.reshape(2, 20, 6), inputs_kv)
  assert out.shape == (2, 4, 5, 3)
  np.testing.assert_allclose(out.reshape(2, 20, 3), flat, atol=1e-6)
  assert set(variables['params']) == {'block_0', 'final_norm', 'output_projection'}


def test_transformer_hidden_size_maps_back_to_input_width():
  transformer = modules.Transformer(
      num_layers=0, num_heads=1, qkv_size=4, mlp_dim=4, hidden_size=8
  )
  variables = random_variables(transformer, jax.random.key(0), jnp.zeros((3, 5)))
  shapes = jax.tree.map(lambda x: x.shape, variables['params'])
  assert shapes == {
      'input_projection': {'kernel': (5, 8), 'bias': (8,)},
      'final_norm': {'scale': (8,)},
      'output_projection': {'kernel': (8, 5), 'bias': (5,)},
  }


# ---------------------------------------------------------------------------------------
# Encoder and decoder.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'mode, token_width, projection_params',
    [('project_add', 8, 8 * 8 + 8 + 8), ('concat', 8 + 8, (16 * 8 + 8) + 8 + (8 * 16 + 16))],
)
def test_frame_encoder(mode, token_width, projection_params):
  encoder = modules.FrameEncoder(
      channels=(4, 8), strides=(2, 2), num_fourier_bases=2, pos_embedding=mode, token_dim=8
  )
  frames = jax.random.uniform(jax.random.key(0), (2, 3, 8, 12, 3))  # [b, T, H, W, 3]
  variables = random_variables(encoder, jax.random.key(1), frames)
  tokens = _apply(encoder, variables, frames)
  assert tokens.shape == (2, 3, 2 * 3, token_width)
  params = variables['params']
  conv_params = (3 * 3 * 3 * 4 + 4) + (3 * 3 * 4 * 8 + 8) + 8  # two convs + output norm
  assert _count(params['backbone']) == conv_params
  assert _count(params['token_projection']) == projection_params
  # Frames are encoded independently.
  np.testing.assert_allclose(tokens[1, 2], _apply(encoder, variables, frames[1, 2]), atol=1e-5)


def test_pixel_decoder_broadcasts_shared_coordinates():
  decoder = modules.PixelDecoder(
      num_layers=1, num_heads=2, qkv_size=8, mlp_dim=16, num_fourier_bases=2
  )
  state = jax.random.normal(jax.random.key(0), (2, 3, 5, 6))  # [b1, b2, n, d]
  coords = modules.grid_coordinates(4, 4)
  variables = random_variables(decoder, jax.random.key(1), state, coords)
  out = _apply(decoder, variables, state, coords)
  assert out.shape == (2, 3, 4, 4, 3)
  # Query width d + 4 * bases = 14.
  assert variables['params']['transformer']['block_0']['mlp_norm']['scale'].shape == (14,)
  # Each pixel is decoded independently: decoding a subset of coordinates agrees.
  np.testing.assert_allclose(
      _apply(decoder, variables, state, coords[1:3, ::2]), out[:, :, 1:3, ::2], atol=1e-5
  )


def test_default_init_is_lecun_normal_with_zero_biases():
  projection = modules.TokenProjection(hidden_size=64)
  params = jax.jit(projection.init)(jax.random.key(0), jnp.zeros((1, 256)))['params']
  kernel = np.asarray(params['input_projection']['kernel'])
  np.testing.assert_allclose(kernel.std(), 1 / np.sqrt(256), rtol=0.05)
  # Truncated at 2 standard deviations of the pre-truncation normal.
  assert np.abs(kernel).max() <= 2 / np.sqrt(256) / 0.87962566103423978
  np.testing.assert_array_equal(params['input_projection']['bias'], 0.0)
  np.testing.assert_array_equal(params['final_norm']['scale'], 1.0)
  assert 'output_projection' in params  # 64 != 256: maps back to the input width


# ---------------------------------------------------------------------------------------
# Lattice subsampling.
# ---------------------------------------------------------------------------------------


def _index_image(height, width):
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  return jnp.asarray(np.stack([rows, cols, rows * 0], -1), jnp.float32)


@pytest.mark.parametrize('factor', [2, 4, 8])
def test_lattice_offset_zero_keeps_centre_of_each_cell(factor):
  kept = modules.lattice_subsample(_index_image(16, 32), factor)
  expected_rows = factor * np.arange(16 // factor) + factor // 2
  expected_cols = factor * np.arange(32 // factor) + factor // 2
  np.testing.assert_array_equal(kept[:, 0, 0], expected_rows)
  np.testing.assert_array_equal(kept[0, :, 1], expected_cols)


def test_lattice_offsets_shift_phase_with_wraparound():
  factor, offsets = 4, jnp.array([[3, 0], [1, 2]])
  images = jnp.stack([_index_image(8, 8)] * 2)
  kept = modules.lattice_subsample(images, factor, offsets)
  for image, (oy, ox) in zip(kept, np.asarray(offsets)):
    np.testing.assert_array_equal(image[:, 0, 0], (factor * np.arange(2) + 2 - oy) % 8)
    np.testing.assert_array_equal(image[0, :, 1], (factor * np.arange(2) + 2 - ox) % 8)
  # Offset 3 with factor 4 wraps: the first kept row is row 7 (bottom of the image).
  assert kept[0, 0, 0, 0] == 7


def test_lattice_keeps_coordinates_and_targets_aligned():
  height, width, factor = 8, 16, 4
  batch_shape = (2, 3)
  frames = jax.random.uniform(jax.random.key(0), batch_shape + (height, width, 3))
  coords = jnp.broadcast_to(modules.grid_coordinates(height, width),
                            batch_shape + (height, width, 2))
  offsets = modules.sample_lattice_offsets(jax.random.key(1), batch_shape, factor)
  assert offsets.shape == batch_shape + (2,)
  assert 0 <= offsets.min() and offsets.max() < factor
  sub_coords = np.asarray(modules.lattice_subsample(coords, factor, offsets))
  sub_frames = np.asarray(modules.lattice_subsample(frames, factor, offsets))
  rows = np.rint((sub_coords[..., 0] + 1) / 2 * (height - 1)).astype(int)
  cols = np.rint((sub_coords[..., 1] + 1) / 2 * (width - 1)).astype(int)
  b1, b2 = np.meshgrid(np.arange(2), np.arange(3), indexing='ij')
  gathered = np.asarray(frames)[b1[..., None, None], b2[..., None, None], rows, cols]
  np.testing.assert_array_equal(sub_frames, gathered)


def test_lattice_rejects_indivisible_frames():
  with pytest.raises(ValueError, match='subsample factor'):
    modules.lattice_subsample(jnp.zeros((10, 8, 3)), 4)
