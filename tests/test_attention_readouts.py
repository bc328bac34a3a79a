"""Tests for moog.readouts.attention_heads (released Ego4D point / box heads) and their npz layout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moog.readouts import attention_heads as ar
from moog.readouts import heads
from moog.released import npz_io
from videolib import checkpoint

NUM_FRAMES, NUM_TOKENS, FEATURE_DIM = 4, 5, 6
TINY = dict(num_frames=NUM_FRAMES, width=16, num_heads=2, mlp_ratio=2, query_dim=8,
            query_hidden=8, num_fourier_bases=2)
TINY_POINTS = dict(num_tiles=2, **TINY)  # 2 tiles x 2 frames.
TINY_BOXES = dict(num_tiles=1, **TINY)  # 1 tile x 4 frames.

# The test programs are tiny and compile time dominates: skip XLA's backend optimisations.
jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def _features(batch_shape, seed=0, num_frames=NUM_FRAMES, dim=FEATURE_DIM):
  shape = (*batch_shape, num_frames, NUM_TOKENS, dim)
  return jax.random.normal(jax.random.key(seed), shape)


def _random_like(params, seed=0, scale=0.3):
  """Every leaf (biases, norms and embeddings included) drawn from N(0, scale²)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype), params)


def _init(head, queries, seed=1):
  params = jax.eval_shape(head.init, jax.random.key(0), _features((1,)), queries)['params']
  return _random_like(params, seed)


@pytest.fixture(scope='module')
def points():
  head = ar.AttentionPointReadout(**TINY_POINTS)
  query_xy = jax.random.uniform(jax.random.key(2), (2, 3, 2))
  return head, _init(head, query_xy), jit(head.apply)


@pytest.fixture(scope='module')
def boxes():
  head = ar.AttentionBoxReadout(**TINY_BOXES)
  query_boxes = jnp.tile(jnp.array([0.1, 0.2, 0.5, 0.6]), (2, 3, 1))
  return head, _init(head, query_boxes), jit(head.apply)


# ---------------------------------------------------------------------------------------
# Shapes and parameter counts.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('batch_shape', [(), (2,), (2, 3)])
def test_point_head_output_shapes(points, batch_shape):
  _, params, apply = points
  query_xy = jnp.full((*batch_shape, 7, 2), 0.5)
  out = apply({'params': params}, _features(batch_shape), query_xy)
  assert out['position'].shape == (*batch_shape, 7, NUM_FRAMES, 2)
  for key in ('visibility_logit', 'certainty_logit', 'visible'):
    assert out[key].shape == (*batch_shape, 7, NUM_FRAMES)
  assert out['visible'].dtype == jnp.bool_
  assert jnp.all((out['position'] > 0) & (out['position'] < 1))


@pytest.mark.parametrize('batch_shape', [(), (2,), (2, 3)])
def test_box_head_output_shapes(boxes, batch_shape):
  _, params, apply = boxes
  query_boxes = jnp.full((*batch_shape, 7, 4), 0.25)
  out = apply({'params': params}, _features(batch_shape), query_boxes)
  assert out['boxes'].shape == (*batch_shape, NUM_FRAMES, 7, 4)


def test_moog_outputs_mapping_selects_the_configured_state(points):
  head, params, apply = points
  features = _features((2,))
  query_xy = jnp.full((2, 3, 2), 0.4)
  from_array = apply({'params': params}, features, query_xy)
  from_mapping = apply({'params': params},
                       {'states_corrected': features, 'states_predicted': 0 * features},
                       query_xy)
  assert head.features == 'corrected'
  np.testing.assert_array_equal(from_array['position'], from_mapping['position'])


def _analytic_param_count(kind, *, num_frames, num_tiles, width, mlp_ratio, query_dim,
                          query_hidden, num_fourier_bases, feature_dim, **unused):
  """Parameter count from the layer sizes of docs/moog_reference.md §10, written out by hand."""
  del unused  # num_heads does not change the count.
  query_in = (2 if kind == 'points' else 4) * 2 * num_fourier_bases  # Fourier, replace.
  outputs = (num_frames // num_tiles) * 4
  hidden = mlp_ratio * width
  return sum([
      query_in * query_hidden + query_hidden + query_hidden * query_dim + query_dim,  # MLP
      num_tiles * query_dim if num_tiles > 1 else 0,  # tile embedding
      2 * feature_dim,  # feature LayerNorm, scale + bias
      num_frames * feature_dim,  # temporal embedding
      query_dim * width + width,  # query Dense
      2 * (feature_dim * width + width),  # key, value DenseGeneral with bias
      width * width + width,  # attention output Dense
      2 * width,  # LayerNorm before the MLP
      width * hidden + hidden + hidden * width + width,  # MLP
      width * outputs + outputs,  # head
  ])


def _param_count(params):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def _release_params(config):
  head = ar.build_attention_readout(config)
  query_size = 2 if config.kind == 'points' else 4
  params = jax.eval_shape(
      head.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 16, 1024, 512), jnp.float32),
      jax.ShapeDtypeStruct((1, 3, query_size), jnp.float32))['params']
  return head, params


@pytest.mark.parametrize('config_fn, expected', [
    (ar.released_point_head_config, 11_338_760),
    (ar.released_box_head_config, 11_424_832),
])
def test_release_size_parameter_count(config_fn, expected):
  config = config_fn()
  _, params = _release_params(config)
  analytic = _analytic_param_count(feature_dim=512, **config)
  assert analytic == expected  # docs/moog_reference.md §11: a head alone is ≈ 11.3–11.4 M.
  assert _param_count(params) == analytic


def test_tiny_parameter_count(points, boxes):
  assert _param_count(points[1]) == _analytic_param_count(
      'points', feature_dim=FEATURE_DIM, **TINY_POINTS)
  assert _param_count(boxes[1]) == _analytic_param_count(
      'boxes', feature_dim=FEATURE_DIM, **TINY_BOXES)


def test_release_size_output_shapes():
  for config in (ar.released_point_head_config(), ar.released_box_head_config()):
    head, params = _release_params(config)
    query_size = 2 if config.kind == 'points' else 4
    out = jax.eval_shape(head.apply, {'params': params},
                         jax.ShapeDtypeStruct((2, 16, 1024, 512), jnp.float32),
                         jax.ShapeDtypeStruct((2, 5, query_size), jnp.float32))
    if config.kind == 'points':
      assert out['position'].shape == (2, 5, 16, 2)
      assert out['visible'].shape == (2, 5, 16)
    else:
      assert out['boxes'].shape == (2, 16, 5, 4)


@pytest.mark.slow
def test_release_size_forward_pass():
  config = ar.released_point_head_config()
  head = ar.build_attention_readout(config)
  features = _features((1,), num_frames=16, dim=512)
  features = jnp.broadcast_to(features[..., :1, :], (1, 16, 1024, 512))
  query_xy = jax.random.uniform(jax.random.key(3), (1, 4, 2))
  params = jax.jit(head.init)(jax.random.key(0), features, query_xy)
  out = jax.jit(head.apply)(params, features, query_xy)
  assert out['position'].shape == (1, 4, 16, 2)
  assert all(bool(jnp.all(jnp.isfinite(value))) for value in jax.tree.leaves(out))


def test_wrong_number_of_frames_is_refused(points):
  head, params, _ = points
  with pytest.raises(ValueError, match='temporal embedding for 4 frames'):
    head.apply({'params': params}, _features((1,), num_frames=3), jnp.zeros((1, 2, 2)))


def test_num_frames_must_split_into_tiles():
  head = ar.AttentionPointReadout(**{**TINY_POINTS, 'num_tiles': 3})
  with pytest.raises(ValueError, match='not divisible by num_tiles'):
    head.init(jax.random.key(0), _features((1,)), jnp.zeros((1, 2, 2)))


# ---------------------------------------------------------------------------------------
# Visibility rule and temporal tiling (golden values).
# ---------------------------------------------------------------------------------------


def test_visibility_rule():
  vis = jnp.array([0.0, 3.0, 10.0, 3.0, -2.0])
  cert = jnp.array([0.0, 3.0, 0.0, 0.2, 10.0])
  # σ·σ = 0.25, 0.905, 0.49998, 0.524, 0.119.
  np.testing.assert_array_equal(heads.visible_from_logits(vis, cert),
                                [False, True, False, True, False])


def test_point_head_visible_follows_the_rule(points):
  _, params, apply = points
  out = apply({'params': params}, _features((2,)), jnp.full((2, 3, 2), 0.3))
  np.testing.assert_array_equal(
      out['visible'],
      jax.nn.sigmoid(out['visibility_logit']) * jax.nn.sigmoid(out['certainty_logit']) > 0.5)


def _zeros(params):
  """Writable numpy zeros (for hand-set golden parameters)."""
  return jax.tree.map(np.zeros_like, jax.tree.map(np.asarray, params))


def _target(params):
  """A load target: jax zeros with the parameters' shapes (and shardings)."""
  return jax.tree.map(jnp.zeros_like, params)


def test_point_tiles_assemble_frames_in_order(points):
  """Tile k outputs frames 2k, 2k+1; its 8 channels are (frame, (x, y, vis, cert))."""
  _, params, apply = points
  golden = _zeros(params)
  # Queries are 0 + tile embedding; the readout passes the first 8 query dims to the
  # 8 outputs (attention, MLP and features contribute nothing).
  tile = np.arange(2)[:, None] * 0.1 + np.arange(8)[None, :] * 0.01
  golden['tile_embedding'] = tile
  golden['readout']['query']['kernel'][:8, :8] = np.eye(8)
  golden['readout']['head']['kernel'][:8, :8] = np.eye(8)
  out = apply({'params': golden}, _features((1,)), jnp.full((1, 3, 2), 0.7))

  frame = np.arange(NUM_FRAMES)
  raw = (0.1 * (frame // 2))[:, None] + 0.01 * ((frame % 2) * 4)[:, None] + 0.01 * np.arange(4)
  for track in range(3):
    np.testing.assert_allclose(out['position'][0, track], jax.nn.sigmoid(raw[:, :2]),
                               rtol=1e-6)
    np.testing.assert_allclose(out['visibility_logit'][0, track], raw[:, 2], rtol=1e-6)
    np.testing.assert_allclose(out['certainty_logit'][0, track], raw[:, 3], rtol=1e-6)


def test_box_tile_assembles_frames_in_order(boxes):
  """One tile, 16 outputs = (frame, box coordinate); boxes come out raw, time-major."""
  _, params, apply = boxes
  golden = _zeros(params)
  golden['readout']['query']['bias'] = np.arange(16, dtype=np.float32)
  golden['readout']['head']['kernel'] = np.eye(16, dtype=np.float32)
  out = apply({'params': golden}, _features((1,)), jnp.full((1, 2, 4), 0.5))
  expected = 4 * np.arange(NUM_FRAMES)[:, None] + np.arange(4)  # [T, 4]
  for box in range(2):
    np.testing.assert_allclose(out['boxes'][0, :, box], expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Queries do not interact.
# ---------------------------------------------------------------------------------------


def test_point_head_is_permutation_equivariant(points):
  _, params, apply = points
  features = _features((2,))
  query_xy = jax.random.uniform(jax.random.key(4), (2, 5, 2))
  permutation = np.array([3, 0, 4, 1, 2])
  out = apply({'params': params}, features, query_xy)
  permuted = apply({'params': params}, features, query_xy[:, permutation])
  for key in ('position', 'visibility_logit', 'certainty_logit'):
    np.testing.assert_allclose(permuted[key], out[key][:, permutation], atol=1e-6)


def test_box_head_is_permutation_equivariant(boxes):
  _, params, apply = boxes
  features = _features((2,))
  query_boxes = jax.random.uniform(jax.random.key(5), (2, 5, 4))
  permutation = np.array([2, 4, 0, 3, 1])
  out = apply({'params': params}, features, query_boxes)['boxes']
  permuted = apply({'params': params}, features, query_boxes[:, permutation])['boxes']
  np.testing.assert_allclose(permuted, out[:, :, permutation], atol=1e-6)


def test_each_query_ignores_the_others(points, boxes):
  features = _features((1,))
  for (_, params, apply), size, key, track_axis in (
      (points, 2, 'position', 1), (boxes, 4, 'boxes', 2)):
    query = jax.random.uniform(jax.random.key(6), (1, 1, size))
    others = jax.random.uniform(jax.random.key(7), (1, 4, size))
    alone = apply({'params': params}, features, query)[key]
    together = apply({'params': params}, features,
                     jnp.concatenate([others[:, :2], query, others[:, 2:]], axis=1))[key]
    np.testing.assert_allclose(jnp.take(together, 2, axis=track_axis),
                               jnp.take(alone, 0, axis=track_axis), atol=1e-6)


def test_gradients_stop_at_the_features_unless_finetuning(points):
  head, params, _ = points
  query_xy = jnp.full((1, 2, 2), 0.5)

  def grad_norm(finetune):
    module = head.clone(finetune=finetune)
    loss = lambda f: jnp.sum(module.apply({'params': params}, f, query_xy)['position'])
    return float(jnp.abs(jit(jax.grad(loss))(_features((1,)))).sum())

  assert grad_norm(False) == 0.0
  assert grad_norm(True) > 0.0


# ---------------------------------------------------------------------------------------
# Released npz layout.
# ---------------------------------------------------------------------------------------

# The released names and shapes at release sizes, written out from the colab's module
# definitions (Flax auto-names), independently of npz_io's map.
RELEASED_POINT_HEAD_SHAPES = {
    'query_initializer/layers_1/Dense_0/kernel': (64, 512),
    'query_initializer/layers_1/Dense_0/bias': (512,),
    'query_initializer/layers_1/Dense_1/kernel': (512, 512),
    'query_initializer/layers_1/Dense_1/bias': (512,),
    'temporal_tile_posenc/embeddings': (8, 512),
    'attention_readout/LayerNorm_0/scale': (512,),
    'attention_readout/LayerNorm_0/bias': (512,),
    'attention_readout/temporal_posenc/embeddings': (16, 1, 512),
    'attention_readout/Dense_0/kernel': (512, 1024),
    'attention_readout/Dense_0/bias': (1024,),
    'attention_readout/key_embedding/kernel': (512, 8, 128),
    'attention_readout/key_embedding/bias': (8, 128),
    'attention_readout/value_embedding/kernel': (512, 8, 128),
    'attention_readout/value_embedding/bias': (8, 128),
    'attention_readout/Dense_1/kernel': (1024, 1024),
    'attention_readout/Dense_1/bias': (1024,),
    'attention_readout/LayerNorm_1/scale': (1024,),
    'attention_readout/LayerNorm_1/bias': (1024,),
    'attention_readout/MLP_0/Dense_0/kernel': (1024, 4096),
    'attention_readout/MLP_0/Dense_0/bias': (4096,),
    'attention_readout/MLP_0/Dense_1/kernel': (4096, 1024),
    'attention_readout/MLP_0/Dense_1/bias': (1024,),
    'attention_readout/Dense_2/kernel': (1024, 8),
    'attention_readout/Dense_2/bias': (8,),
}
RELEASED_BOX_HEAD_SHAPES = {
    **{key: shape for key, shape in RELEASED_POINT_HEAD_SHAPES.items()
       if not key.startswith('temporal_tile_posenc')},
    'query_initializer/layers_1/Dense_0/kernel': (128, 512),
    'attention_readout/key_embedding/kernel': (512, 4, 256),
    'attention_readout/key_embedding/bias': (4, 256),
    'attention_readout/value_embedding/kernel': (512, 4, 256),
    'attention_readout/value_embedding/bias': (4, 256),
    'attention_readout/Dense_2/kernel': (1024, 64),
    'attention_readout/Dense_2/bias': (64,),
}


@pytest.mark.parametrize('config_fn, released', [
    (ar.released_point_head_config, RELEASED_POINT_HEAD_SHAPES),
    (ar.released_box_head_config, RELEASED_BOX_HEAD_SHAPES),
])
def test_release_size_heads_map_onto_the_released_layout(config_fn, released):
  _, params = _release_params(config_fn())
  flat = {jax.tree_util.keystr(path, simple=True, separator='/'): leaf.shape
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert {npz_io.project_head_to_released_key(key): shape
          for key, shape in flat.items()} == released
  assert {npz_io.released_head_to_project_key(key): shape
          for key, shape in released.items()} == flat


def test_released_layout_file_loads_with_identical_outputs(points, tmp_path):
  _, params, apply = points
  path = str(tmp_path / 'point_head_released_layout.npz')
  npz_io.save_released_head_layout(path, params)
  with np.load(path) as stored:
    assert set(stored.files) == set(RELEASED_POINT_HEAD_SHAPES)

  loaded = npz_io.load_released_head(path, _target(params))
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  features, query_xy = _features((2,)), jax.random.uniform(jax.random.key(8), (2, 3, 2))
  expected = apply({'params': params}, features, query_xy)
  for source in (loaded, None):
    if source is None:  # Through the converter CLI's function and `config.init_from`.
      converted = str(tmp_path / 'point_head_project_names.npz')
      npz_io.convert_released_file(path, converted, kind='head')
      source = checkpoint.load_params(converted, _target(params))
    got = apply({'params': source}, features, query_xy)
    for key in expected:
      np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(expected[key]))


def test_box_head_released_layout_round_trip(boxes, tmp_path):
  _, params, apply = boxes
  path = str(tmp_path / 'box_head_released_layout.npz')
  npz_io.save_released_head_layout(path, params)
  with np.load(path) as stored:
    assert set(stored.files) == set(RELEASED_BOX_HEAD_SHAPES)
  loaded = npz_io.load_released_head(path, _target(params))
  features, query_boxes = _features((1,)), jax.random.uniform(jax.random.key(9), (1, 2, 4))
  np.testing.assert_array_equal(
      np.asarray(apply({'params': loaded}, features, query_boxes)['boxes']),
      np.asarray(apply({'params': params}, features, query_boxes)['boxes']))


@pytest.mark.parametrize('damage, reported', [
    ('wrong_shape', "['readout']['head']['kernel']: (16, 3) != (16, 8)"),
    ('missing', "missing: [\"['tile_embedding']\"]"),
    ('unexpected', "unexpected: [\"['encoder']['conv_0']['kernel']\"]"),
])
def test_damaged_released_head_is_refused_by_name(points, tmp_path, damage, reported):
  _, params, _ = points
  flat = {npz_io.project_head_to_released_key(key): value
          for key, value in checkpoint.flatten_params(params).items()}
  if damage == 'wrong_shape':
    flat['attention_readout/Dense_2/kernel'] = np.zeros((16, 3), np.float32)
  elif damage == 'missing':
    del flat['temporal_tile_posenc/embeddings']
  else:  # e.g. a head file that bundles the backbone.
    flat['encoder/conv_0/kernel'] = np.zeros((3, 3, 3, 4), np.float32)
  path = str(tmp_path / 'damaged_head.npz')
  with open(path, 'wb') as f:
    np.savez(f, **flat)
  with pytest.raises(checkpoint.CheckpointError) as error:
    npz_io.load_released_head(path, params)
  assert reported in str(error.value)


def test_converter_rejects_unknown_kind(tmp_path):
  with pytest.raises(ValueError, match='kind must be one of'):
    npz_io.convert_released_file('x.npz', str(tmp_path / 'y.npz'), kind='depth')
