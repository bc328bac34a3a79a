"""Tests for the flat-key `.npz` parameter files: videolib/checkpoint.py and moog/released/npz_io.py."""

import functools
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import moog_ego4d
from moog import model as moog_model
from moog.released import npz_io
from videolib import checkpoint

VIDEO_SHAPE = (1, 2, 16, 16, 3)
RELEASED_TOP_LEVEL = {'encoder', 'predictor_sa', 'predictor_ca', 'decoder', 'state_layer_norm'}
RELEASE_BACKBONE_PARAMS = {False: 35_193_811, True: 36_967_507}  # decoder self-attention


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
# configs/moog_ego4d.py and moog/released/npz_io.py: the released Ego4D layout.
# ---------------------------------------------------------------------------------------


# The released backbone layout, written from the upstream module code (google-deepmind/
# representations4d: colabs/moog_inference_demo.ipynb, moog/attention.py, moog/conv.py)
# and Flax's naming rules (explicit `name=`; otherwise `<Class>_<i>` per class in
# creation order), independently of npz_io's map.


def _released_attention(prefix, width, kv_width, heads, qkv):
  head_dim = qkv // heads
  return {
      f'{prefix}/dense_query/kernel': (width, heads, head_dim),
      f'{prefix}/dense_key/kernel': (kv_width, heads, head_dim),
      f'{prefix}/dense_value/kernel': (kv_width, heads, head_dim),
      f'{prefix}/norm_query/scale': (head_dim,),
      f'{prefix}/norm_key/scale': (head_dim,),
      f'{prefix}/dense_out/kernel': (heads, head_dim, width),
      f'{prefix}/dense_out/bias': (width,),
  }


def _released_transformer(prefix, width, sizes, *, self_att, kv_width=None):
  """`ImprovedTransformer` without hidden/output sizes: `layer_i` blocks + `norm_encoder`."""
  shapes = {f'{prefix}/norm_encoder/scale': (width,)}
  for i in range(sizes.num_layers):
    layer = f'{prefix}/layer_{i}'
    shapes[f'{layer}/norm_q/scale'] = (width,)
    if self_att:
      shapes.update(_released_attention(f'{layer}/self_att', width, width, sizes.num_heads,
                                        sizes.qkv_size))
    if kv_width is not None:
      shapes.update(_released_attention(f'{layer}/cross_att', width, kv_width,
                                        sizes.num_heads, sizes.qkv_size))
    shapes[f'{layer}/norm_attn/scale'] = (width,)
    shapes[f'{layer}/MLP_in/kernel'] = (width, sizes.mlp_dim)
    shapes[f'{layer}/MLP_in/bias'] = (sizes.mlp_dim,)
    shapes[f'{layer}/MLP_out/kernel'] = (sizes.mlp_dim, width)
    shapes[f'{layer}/MLP_out/bias'] = (width,)
  return shapes


def released_backbone_shapes(c, decoder_self_attention=False, prefix=''):
  """{released key: shape} of the colab's MooG at the sizes of model config `c`."""
  shapes = {}
  in_channels = 3
  for i, channels in enumerate(c.encoder_channels):  # ConvNet: auto-named Conv_i.
    shapes[f'encoder/backbone/Conv_{i}/kernel'] = (3, 3, in_channels, channels)
    shapes[f'encoder/backbone/Conv_{i}/bias'] = (channels,)
    in_channels = channels
  shapes['encoder/backbone/LayerNorm_0/scale'] = (in_channels,)
  pe_width = 4 * c.encoder_fourier_bases
  if c.encoder_pos_embedding == 'concat':
    token_width = in_channels + pe_width
  else:
    shapes['encoder/pos_embedding/dense_pe/kernel'] = (pe_width, in_channels)
    shapes['encoder/pos_embedding/dense_pe/bias'] = (in_channels,)
    token_width = in_channels
  # 0-layer ImprovedTransformer(hidden_size=token_dim): Dense_0, norm_encoder, Dense_1.
  shapes['encoder/transformer/Dense_0/kernel'] = (token_width, c.token_dim)
  shapes['encoder/transformer/Dense_0/bias'] = (c.token_dim,)
  shapes['encoder/transformer/norm_encoder/scale'] = (c.token_dim,)
  if token_width != c.token_dim:
    shapes['encoder/transformer/Dense_1/kernel'] = (c.token_dim, token_width)
    shapes['encoder/transformer/Dense_1/bias'] = (token_width,)
  shapes.update(_released_transformer('predictor_sa', c.token_dim, c.predictor,
                                      self_att=True))
  shapes.update(_released_transformer('predictor_ca', c.token_dim, c.corrector,
                                      self_att=True, kv_width=token_width))
  decoder_width = c.token_dim + 4 * c.decoder_fourier_bases
  shapes.update(_released_transformer('decoder/transformer', decoder_width, c.decoder,
                                      self_att=decoder_self_attention, kv_width=c.token_dim))
  shapes['decoder/recon/kernel'] = (decoder_width, 3)
  shapes['decoder/recon/bias'] = (3,)
  shapes['state_layer_norm/scale'] = (c.token_dim,)
  return {(f'{prefix}/' if prefix else '') + key: shape for key, shape in shapes.items()}


def _project_shapes(config):
  module = moog_model.build_moog(config)
  rngs = {'params': jax.random.key(0), 'default': jax.random.key(1)}
  params = jax.eval_shape(functools.partial(module.init, train=False), rngs,
                          jnp.zeros(VIDEO_SHAPE))['params']
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=sharding), params)
  return {jax.tree_util.keystr(path, simple=True, separator='/'): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}, params


def _tiny_config(decoder_self_attention):
  config = _tiny_concat_config()
  config.decoder_self_attention = decoder_self_attention
  return config


# Spot checks, written by hand (at tiny sizes several norms share a shape, so shapes
# alone would not catch e.g. norm_q <-> norm_attn).
EXPECTED_PAIRS = {
    'encoder/backbone/Conv_1/kernel': 'encoder/backbone/conv_1/kernel',
    'encoder/backbone/LayerNorm_0/scale': 'encoder/backbone/output_norm/scale',
    'encoder/transformer/Dense_0/kernel': 'encoder/token_projection/input_projection/kernel',
    'encoder/transformer/norm_encoder/scale': 'encoder/token_projection/final_norm/scale',
    'encoder/transformer/Dense_1/bias': 'encoder/token_projection/output_projection/bias',
    'predictor_sa/layer_0/norm_q/scale': 'predictor/block_0/attention_norm/scale',
    'predictor_sa/layer_0/norm_attn/scale': 'predictor/block_0/mlp_norm/scale',
    'predictor_sa/layer_0/self_att/dense_query/kernel':
        'predictor/block_0/self_attention/query/kernel',
    'predictor_sa/layer_0/self_att/norm_query/scale':
        'predictor/block_0/self_attention/query_norm/scale',
    'predictor_sa/layer_0/self_att/norm_key/scale':
        'predictor/block_0/self_attention/key_norm/scale',
    'predictor_sa/layer_0/self_att/dense_key/kernel':
        'predictor/block_0/self_attention/key/kernel',
    'predictor_sa/layer_0/self_att/dense_value/kernel':
        'predictor/block_0/self_attention/value/kernel',
    'predictor_sa/layer_0/MLP_in/bias': 'predictor/block_0/mlp_in/bias',
    'predictor_sa/layer_0/MLP_out/bias': 'predictor/block_0/mlp_out/bias',
    'predictor_sa/norm_encoder/scale': 'predictor/final_norm/scale',
    'predictor_ca/layer_0/cross_att/dense_out/bias':
        'corrector/block_0/cross_attention/output/bias',
    'predictor_ca/layer_0/self_att/dense_out/bias':
        'corrector/block_0/self_attention/output/bias',
    'decoder/transformer/layer_0/cross_att/dense_value/kernel':
        'decoder/transformer/block_0/cross_attention/value/kernel',
    'decoder/transformer/norm_encoder/scale': 'decoder/transformer/final_norm/scale',
    'decoder/recon/kernel': 'decoder/output_head/kernel',
    'state_layer_norm/scale': 'state_norm/scale',
}


def _write_released(path, shapes, seed=0):
  """Writes a released-layout file; every array element is a distinct random value."""
  rng = np.random.default_rng(seed)
  total = sum(int(np.prod(shape)) for shape in shapes.values())
  values = rng.permutation(total) / total - 0.5
  flat, start = {}, 0
  for key, shape in shapes.items():
    size = int(np.prod(shape))
    flat[key] = values[start:start + size].reshape(shape).astype(np.float32)
    start += size
  _write_flat(path, flat)
  return flat


@pytest.mark.parametrize('decoder_self_attention', [False, True])
@pytest.mark.parametrize('prefix', ['', 'pretrained_model'])
def test_released_layout_file_loads_every_array_into_its_place(
    tmp_path, decoder_self_attention, prefix):
  config = _tiny_config(decoder_self_attention)
  project, abstract = _project_shapes(config)
  released = released_backbone_shapes(config, decoder_self_attention, prefix)
  assert len(released) == len(project)
  path = str(tmp_path / 'released.npz')
  written = _write_released(path, released)

  loaded = npz_io.load_released(path, abstract)  # prefix='auto'

  # Trace every array by its (unique) values back to the released key it came from.
  source = {np.asarray(value).tobytes(): key for key, value in written.items()}
  landed = {}
  for name, value in checkpoint.flatten_params(loaded).items():
    key = source[value.tobytes()]
    landed[key[len(prefix) + 1:] if prefix else key] = name
  assert len(landed) == len(released) == len(set(landed.values()))
  for key, name in EXPECTED_PAIRS.items():
    assert landed[key] == name
  if decoder_self_attention:
    assert (landed['decoder/transformer/layer_0/self_att/dense_query/kernel']
            == 'decoder/transformer/block_0/self_attention/query/kernel')
  assert landed == {key: npz_io.released_to_project_key(key) for key in landed}

  # The loaded parameters run, and the converter CLI's function writes the same tree.
  module = moog_model.build_moog(config)
  video = jnp.asarray(np.random.default_rng(1).uniform(size=VIDEO_SHAPE), jnp.float32)
  out = module.apply({'params': loaded}, video, train=False,
                     rngs={'default': jax.random.key(2)})['video_predicted']
  assert np.all(np.isfinite(np.asarray(out)))
  converted = str(tmp_path / 'project_names.npz')
  npz_io.convert_released_file(path, converted)
  _assert_trees_equal(checkpoint.load_params(converted, _zero_like(loaded)), loaded)


@pytest.mark.parametrize('prefix', ['', 'pretrained_model'])
def test_export_then_load_is_identity_and_writes_the_released_keys(tiny, tmp_path, prefix):
  _, params = tiny
  path = str(tmp_path / 'exported.npz')
  npz_io.save_released_layout(path, params, prefix=prefix)
  with np.load(path) as stored:
    assert {key: stored[key].shape for key in stored.files} == released_backbone_shapes(
        _tiny_concat_config(), prefix=prefix)
  _assert_trees_equal(npz_io.load_released(path, _zero_like(params)), params)
  _assert_trees_equal(npz_io.load_released(path, _zero_like(params), prefix=prefix), params)


@pytest.mark.parametrize('decoder_self_attention', [False, True])
def test_release_size_released_keys_match_the_project_tree_one_to_one(decoder_self_attention):
  config = moog_ego4d.get_config().model
  config.decoder_self_attention = decoder_self_attention
  project, _ = _project_shapes(config)
  released = released_backbone_shapes(config, decoder_self_attention)
  assert sum(int(np.prod(shape)) for shape in project.values()) == (
      RELEASE_BACKBONE_PARAMS[decoder_self_attention])
  assert {key.split('/')[0] for key in released} == RELEASED_TOP_LEVEL
  assert {npz_io.released_to_project_key(key): shape
          for key, shape in released.items()} == project
  assert {npz_io.project_to_released_key(key): shape
          for key, shape in project.items()} == released


def test_ego4d_config_builds_the_released_backbone_shape():
  config = moog_ego4d.get_config()
  assert (config.data.num_frames, config.data.resolution) == (16, 256)
  assert tuple(config.model.encoder_strides) == (2, 1, 1, 2, 1, 1)
  assert config.model.decoder_self_attention is False


def test_ego4d_config_rejects_unknown_argument():
  with pytest.raises(ValueError, match='unknown argument'):
    moog_ego4d.get_config('res=128')


def _released_tiny_file(tmp_path, edit, prefix=''):
  config = _tiny_concat_config()
  shapes = released_backbone_shapes(config, prefix=prefix)
  edit(shapes)
  path = str(tmp_path / 'edited.npz')
  _write_released(path, shapes)
  return path, _project_shapes(config)[1]


def test_wrong_shape_is_refused_with_the_name(tmp_path):
  def edit(shapes):
    shapes['predictor_ca/layer_0/cross_att/dense_key/kernel'] = (5, 2, 16)
  path, abstract = _released_tiny_file(tmp_path, edit)
  with pytest.raises(checkpoint.CheckpointError,
                     match=re.escape("['corrector']['block_0']['cross_attention']['key']"
                                     "['kernel']: (5, 2, 16) != (48, 2, 16)")):
    npz_io.load_released(path, abstract)


def test_missing_key_is_refused_with_the_name(tmp_path):
  path, abstract = _released_tiny_file(
      tmp_path, lambda shapes: shapes.pop('predictor_sa/layer_0/norm_attn/scale'))
  with pytest.raises(checkpoint.CheckpointError,
                     match=re.escape("missing: [\"['predictor']['block_0']['mlp_norm']['scale']\"]")):
    npz_io.load_released(path, abstract)


@pytest.mark.parametrize('extra, reported', [
    # the colab's initializer has no weights
    ('initializer/dense/kernel', 'initializer/dense/kernel'),
    # no input/output projections in the released predictor
    ('predictor_sa/Dense_0/kernel', 'predictor_sa/Dense_0/kernel'),
    # this project's name, not the released one
    ('encoder/backbone/conv_0/kernel', 'encoder/backbone/conv_0/kernel'),
    # a layer of the layout with a parameter it lacks: unexpected, by its project name
    ('predictor_sa/layer_0/norm_q/bias', "['predictor']['block_0']['attention_norm']['bias']"),
])
def test_key_outside_the_released_layout_is_refused_with_the_name(tmp_path, extra, reported):
  path, abstract = _released_tiny_file(tmp_path, lambda shapes: shapes.update({extra: (4,)}))
  with pytest.raises(checkpoint.CheckpointError, match=re.escape(reported)):
    npz_io.load_released(path, abstract)


def test_converter_refuses_keys_outside_the_layout(tmp_path):
  path, _ = _released_tiny_file(
      tmp_path, lambda shapes: shapes.update({'predictor_sa/Dense_0/kernel': (4,)}))
  with pytest.raises(checkpoint.CheckpointError, match='predictor_sa/Dense_0/kernel'):
    npz_io.convert_released_file(path, str(tmp_path / 'out.npz'))


def test_decoder_self_attention_mismatch_says_which_flag_to_set(tmp_path):
  config = _tiny_config(True)
  path = str(tmp_path / 'sa_decoder.npz')
  _write_released(path, released_backbone_shapes(config, decoder_self_attention=True))
  _, cross_only = _project_shapes(_tiny_config(False))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"self_attention'\]\['query'\]\['kernel'\][\s\S]*"
                           r'model.decoder_self_attention=True'):
    npz_io.load_released(path, cross_only)


def test_wrapper_prefix_mix_or_mismatch_is_refused(tmp_path):
  def edit(shapes):
    shapes['state_layer_norm/scale'] = shapes.pop('pretrained_model/state_layer_norm/scale')
  path, abstract = _released_tiny_file(tmp_path, edit, prefix='pretrained_model')
  with pytest.raises(checkpoint.CheckpointError, match='pass the prefix explicitly'):
    npz_io.load_released(path, abstract)
  with pytest.raises(checkpoint.CheckpointError,
                     match=re.escape("outside the wrapper prefix 'pretrained_model': "
                                     "['state_layer_norm/scale']")):
    npz_io.load_released(path, abstract, prefix='pretrained_model')


def test_project_params_outside_the_released_layout_are_not_exported(tiny, tmp_path):
  _, params = tiny
  params = {**params, 'extra': {'kernel': jnp.zeros(2)}}
  with pytest.raises(checkpoint.CheckpointError, match=r"\['extra/kernel'\]"):
    npz_io.save_released_layout(str(tmp_path / 'x.npz'), params)


def test_converter_cli_strips_the_wrapper_prefix(tmp_path):
  config = _tiny_concat_config()
  path = str(tmp_path / 'released.npz')
  written = _write_released(path, released_backbone_shapes(config, prefix='pretrained_model'))
  output = str(tmp_path / 'converted.npz')
  subprocess.run([sys.executable, '-m', 'moog.released.npz_io', f'--released={path}',
                  f'--output={output}'], check=True, capture_output=True)
  with np.load(output) as stored:
    assert sorted(stored.files) == sorted(_project_shapes(config)[0])
    np.testing.assert_array_equal(stored['corrector/block_0/cross_attention/key/kernel'],
                                  written['pretrained_model/predictor_ca/layer_0/cross_att/'
                                          'dense_key/kernel'])
