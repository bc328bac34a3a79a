"""Tests for the flat-key `.npz` parameter files: videolib/checkpoint.py and moog/npz_io.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import moog_ego4d
from moog import model as moog_model
from moog import npz_io
from videolib import checkpoint

VIDEO_SHAPE = (1, 2, 16, 16, 3)
RELEASED_TOP_LEVEL = {'encoder', 'predictor_sa', 'predictor_ca', 'decoder', 'state_layer_norm'}


def _random_params(config):
  """Random MooG parameters from numpy draws on the `eval_shape` tree (no init compile)."""
  module = moog_model.build_moog(config)
  rngs = {'params': jax.random.key(0), 'default': jax.random.key(1)}
  shapes = jax.eval_shape(functools.partial(module.init, train=False), rngs,
                          jnp.zeros(VIDEO_SHAPE))['params']
  np_rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda leaf: jnp.asarray(0.1 * np_rng.standard_normal(leaf.shape), leaf.dtype), shapes)
  return module, params


def _tiny_concat_config():
  """Tiny model with the Ego4D variant's concatenated encoder PE."""
  config = moog_model.tiny_model_config()
  config.encoder_pos_embedding = 'concat'
  return config


@pytest.fixture(scope='module')
def tiny():
  return _random_params(_tiny_concat_config())


def _assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _zero_like(params):
  return jax.tree.map(jnp.zeros_like, params)


# ---------------------------------------------------------------------------------------
# videolib/checkpoint.py: generic flat-key files.
# ---------------------------------------------------------------------------------------


def test_round_trip_gives_identical_params_and_outputs(tiny, tmp_path):
  module, params = tiny
  path = str(tmp_path / 'params.npz')
  checkpoint.save_npz_params(path, params)
  with np.load(path) as stored:
    assert 'corrector/block_0/cross_attention/query/kernel' in stored.files
    assert len(stored.files) == len(jax.tree.leaves(params))

  loaded = checkpoint.load_npz_params(path, _zero_like(params))

  _assert_trees_equal(loaded, params)
  video = jnp.asarray(np.random.default_rng(1).uniform(size=VIDEO_SHAPE), jnp.float32)
  apply = lambda p: module.apply({'params': p}, video, train=False,
                                 rngs={'default': jax.random.key(2)})['video_predicted']
  np.testing.assert_array_equal(np.asarray(apply(loaded)), np.asarray(apply(params)))


def test_load_params_reads_npz_init_from(tiny, tmp_path):
  _, params = tiny
  path = str(tmp_path / 'params.npz')
  checkpoint.save_npz_params(path, params)
  _assert_trees_equal(checkpoint.load_params(path, _zero_like(params)), params)
  # Only the named subtrees are loaded; the rest keeps the target's values.
  target = _zero_like(params)
  partial = checkpoint.load_params(path, target, prefixes=('encoder',))
  _assert_trees_equal(partial['encoder'], params['encoder'])
  _assert_trees_equal(partial['decoder'], target['decoder'])


def _write_flat(path, flat):
  with open(path, 'wb') as f:
    np.savez(f, **flat)


@pytest.mark.parametrize('damage, reported', [
    ('missing', "missing: [\"['state_norm']['scale']\"]"),
    ('unexpected', "unexpected: [\"['state_norm']['bias']\"]"),
    ('wrong_shape', "['state_norm']['scale']: (3,) != (32,)"),
])
def test_damaged_file_is_refused_with_the_name(tiny, tmp_path, damage, reported):
  _, params = tiny
  flat = checkpoint.flatten_params(params)
  if damage == 'missing':
    del flat['state_norm/scale']
  elif damage == 'unexpected':
    flat['state_norm/bias'] = np.zeros(32, np.float32)
  else:
    flat['state_norm/scale'] = np.ones(3, np.float32)
  path = str(tmp_path / 'damaged.npz')
  _write_flat(path, flat)

  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.load_npz_params(path, params)
  assert reported in str(error.value)


def test_key_that_is_both_array_and_prefix_is_refused(tmp_path):
  path = str(tmp_path / 'clash.npz')
  _write_flat(path, {'a': np.zeros(2), 'a/b': np.zeros(2)})
  with pytest.raises(checkpoint.CheckpointError, match="'a/b' lies under 'a'"):
    checkpoint.read_npz_params(path)


def test_key_map_collision_is_refused(tmp_path):
  path = str(tmp_path / 'collide.npz')
  _write_flat(path, {'a/x': np.zeros(2), 'b/x': np.zeros(2)})
  with pytest.raises(checkpoint.CheckpointError, match="two stored keys map to 'c/x'"):
    checkpoint.read_npz_params(path, key_map=lambda key: 'c/x')


# ---------------------------------------------------------------------------------------
# configs/moog_ego4d.py and moog/npz_io.py: the released Ego4D layout.
# ---------------------------------------------------------------------------------------


def test_ego4d_config_builds_the_released_backbone_shape():
  config = moog_ego4d.get_config()
  assert (config.data.num_frames, config.data.resolution) == (16, 256)
  assert tuple(config.model.encoder_strides) == (2, 1, 1, 2, 1, 1)
  module = moog_model.build_moog(config.model)
  rngs = {'params': jax.random.key(0), 'default': jax.random.key(1)}
  video_shape = (1, 2, config.data.resolution, config.data.resolution, 3)
  params = jax.eval_shape(functools.partial(module.init, train=False), rngs,
                          jnp.zeros(video_shape))['params']
  assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)) == 35_193_811

  # Every parameter name maps into the documented released submodules and back.
  names = list(checkpoint.flatten_params(jax.tree.map(lambda leaf: np.zeros(()), params)))
  released = [npz_io.project_to_released_key(name) for name in names]
  assert {name.split('/')[0] for name in released} == RELEASED_TOP_LEVEL
  assert [npz_io.released_to_project_key(name) for name in released] == names


def test_ego4d_config_rejects_unknown_argument():
  with pytest.raises(ValueError, match='unknown argument'):
    moog_ego4d.get_config('res=128')


def test_released_layout_file_loads_without_missing_or_unexpected_keys(tiny, tmp_path):
  _, params = tiny
  path = str(tmp_path / 'released_layout.npz')
  npz_io.save_released_layout(path, params)
  with np.load(path) as stored:
    assert {key.split('/')[0] for key in stored.files} == RELEASED_TOP_LEVEL
    assert 'predictor_ca/block_0/cross_attention/query/kernel' in stored.files

  _assert_trees_equal(npz_io.load_released(path, _zero_like(params)), params)

  converted = str(tmp_path / 'project_names.npz')
  npz_io.convert_released_file(path, converted)
  _assert_trees_equal(checkpoint.load_params(converted, _zero_like(params)), params)


def test_released_initializer_weights_are_reported_as_unexpected(tiny, tmp_path):
  _, params = tiny
  flat = {npz_io.project_to_released_key(key): value
          for key, value in checkpoint.flatten_params(params).items()}
  flat['initializer/dense/kernel'] = np.zeros((4, 4), np.float32)
  path = str(tmp_path / 'with_initializer.npz')
  _write_flat(path, flat)
  with pytest.raises(checkpoint.CheckpointError, match=r"\['initializer'\]\['dense'\]"):
    npz_io.load_released(path, params)
