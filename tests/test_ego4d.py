"""Tests for the released-Ego4D path: MooG's pre-norm corrected states and moog/released/ego4d.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moog import grid_baselines
from moog import model as moog_model
from moog import motion_guided
from moog.readouts import attention_heads as ar
from moog.readouts import heads
from moog.released import ego4d
from moog.released import npz_io
from videolib import checkpoint

VIDEO_SHAPE = (2, 3, 16, 16, 3)


def _tiny_concat_config():
  config = moog_model.tiny_model_config()
  config.encoder_pos_embedding = 'concat'  # The Ego4D variant's encoder PE.
  return config


def _random_params(module, video_shape=VIDEO_SHAPE, seed=0, scale=0.3):
  """Random parameters (norm scales included) from numpy on the `eval_shape` tree."""
  rngs = {'params': jax.random.key(0), 'default': jax.random.key(1)}
  shapes = jax.eval_shape(functools.partial(module.init, train=False), rngs,
                          jnp.zeros(video_shape))['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype), shapes)


@pytest.fixture(scope='module')
def tiny():
  module = moog_model.build_moog(_tiny_concat_config())
  params = _random_params(module)
  video = jax.random.uniform(jax.random.key(3), VIDEO_SHAPE)
  return module, params, video


def _apply(module, params, video, **kwargs):
  return jax.jit(functools.partial(module.apply, train=False, **kwargs))(
      {'params': params}, video, rngs={'default': jax.random.key(5)})


# ---------------------------------------------------------------------------------------
# 1. `states_corrected_prenorm`.
# ---------------------------------------------------------------------------------------


def test_prenorm_output_is_off_by_default_and_changes_no_other_output(tiny):
  module, params, video = tiny
  assert not module.return_corrected_prenorm
  default = _apply(module, params, video)
  assert 'states_corrected_prenorm' not in default
  with_prenorm = _apply(module.clone(return_corrected_prenorm=True), params, video)
  assert set(with_prenorm) == set(default) | {'states_corrected_prenorm'}
  for key, value in default.items():
    np.testing.assert_array_equal(np.asarray(with_prenorm[key]), np.asarray(value), key)
  assert with_prenorm['states_corrected_prenorm'].shape == default['states_corrected'].shape


def test_state_norm_of_prenorm_is_states_corrected(tiny):
  module, params, video = tiny
  out = _apply(module.clone(return_corrected_prenorm=True), params, video)
  normed = module.apply({'params': params}, out['states_corrected_prenorm'],
                        method=lambda m, x: m.state_norm(x))
  # Same operations; a separately compiled LayerNorm may round differently (~1e-7).
  np.testing.assert_allclose(np.asarray(normed), np.asarray(out['states_corrected']),
                             rtol=1e-5, atol=1e-6)
  # The pre-norm states are not normed: their per-token std is not ~ the norm's scale.
  assert not np.allclose(np.asarray(out['states_corrected_prenorm']),
                         np.asarray(out['states_corrected']), atol=1e-2)


def _colab_order_features(module, params, video, noise):
  """The released colab's loop, written out literally with this model's submodules.

  x = noise; per frame: s = LN(x); s = s + Predictor(s); x = s + Corrector(s, e_t);
  features = [x_0, ..., x_{T-1}] (before the next LN); returns (features, x_{T-1}).
  """

  def loop(m, video, noise):
    tokens = m.encode(video)
    x, features = noise, []
    for t in range(video.shape[-4]):
      s = m.state_norm(x)
      s = s + m.predictor(s)
      x = s + m.corrector(s, inputs_kv=tokens[..., t, :, :])
      features.append(x)
    return jnp.stack(features, axis=-3), x

  return jax.jit(lambda p, v, n: module.apply({'params': p}, v, n, method=loop))(
      params, video, noise)


@pytest.mark.parametrize('init_scale', [1e-4, 1.0])
def test_prenorm_equals_the_colab_step_order_with_the_same_noise(tiny, init_scale):
  module, params, video = tiny
  noise = init_scale * jax.random.normal(jax.random.key(7), (2, 8, 32))
  expected, last = _colab_order_features(module, params, video, noise)
  normed_noise = module.apply({'params': params}, noise, method=lambda m, x: m.state_norm(x))
  out = _apply(module.clone(return_corrected_prenorm=True), params, video,
               state=normed_noise)
  np.testing.assert_allclose(np.asarray(out['states_corrected_prenorm']),
                             np.asarray(expected), rtol=1e-5, atol=1e-5)
  # The colab returns the raw last state; this model the normed one.
  np.testing.assert_allclose(
      np.asarray(out['state']),
      np.asarray(module.apply({'params': params}, last, method=lambda m, x: m.state_norm(x))),
      rtol=1e-5, atol=1e-5)


def test_initial_state_is_the_normed_colab_noise(tiny):
  """MooG's random init = LN(1e-4 · N(0, 1)) = what the colab's first step normalises."""
  module, params, _ = tiny
  key = jax.random.key(11)
  state = module.apply({'params': params}, (2,), method=lambda m, b: m.initial_state(b),
                       rngs={'default': key})
  # Recover the draw: with the same rng path, the noise is 1e-4 · normal(make_rng).
  noise = module.apply({'params': params}, (2,), rngs={'default': key}, method=lambda m, b:
                       m.state_init_scale * jax.random.normal(
                           m.make_rng('default'), b + (m.num_tokens, m.token_dim)))
  normed = module.apply({'params': params}, noise, method=lambda m, x: m.state_norm(x))
  np.testing.assert_array_equal(np.asarray(state), np.asarray(normed))
  assert module.state_init_scale == 1e-4 == moog_model.ego4d_model_config().state_init_scale


@pytest.mark.parametrize('kind', ['grid', 'grid_rec'])
def test_grid_backbones_return_prenorm_states_too(kind):
  config = moog_model.tiny_model_config()
  config.num_tokens = 16  # 16x16 frames, stride 4: 4x4 cells.
  module = grid_baselines.build_backbone(kind, config)
  params = _random_params(module)
  video = jax.random.uniform(jax.random.key(4), VIDEO_SHAPE)
  default = _apply(module, params, video)
  out = _apply(module.clone(return_corrected_prenorm=True), params, video)
  np.testing.assert_array_equal(np.asarray(out['states_corrected']),
                                np.asarray(default['states_corrected']))
  normed = module.apply({'params': params}, out['states_corrected_prenorm'],
                        method=lambda m, x: m.state_norm(x))
  np.testing.assert_allclose(np.asarray(normed), np.asarray(out['states_corrected']),
                             rtol=1e-5, atol=1e-6)


def test_motion_guided_gather_path_keeps_the_flag(tiny):
  module, params, video = tiny
  gathered = motion_guided.gathered_from(module.clone(return_corrected_prenorm=True), 0.5)
  assert gathered.return_corrected_prenorm
  out = _apply(gathered, params, video)
  assert out['states_corrected_prenorm'].shape == out['states_corrected'].shape


# ---------------------------------------------------------------------------------------
# 2. moog/released/ego4d.py.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def released_files(tmp_path_factory):
  config = ego4d.tiny_config()
  paths = ego4d.write_random_released_files(config, str(tmp_path_factory.mktemp('ego4d')))
  return config, paths


def _clip_and_queries(config, seed=0):
  rng = np.random.default_rng(seed)
  shape = (2, config.num_frames, config.resolution, config.resolution, 3)
  video = rng.uniform(size=shape).astype(np.float32)
  query_xy = rng.uniform(size=(2, 3, 2)).astype(np.float32)
  query_boxes = np.tile(np.float32([0.1, 0.2, 0.5, 0.6]), (2, 2, 1))
  return video, query_xy, query_boxes


def test_released_files_use_the_released_key_layout(released_files):
  _, paths = released_files
  with np.load(paths['backbone']) as stored:
    assert {key.split('/')[0] for key in stored.files} == {
        'encoder', 'predictor_sa', 'predictor_ca', 'decoder', 'state_layer_norm'}
  for name in ('point_head', 'box_head'):
    with np.load(paths[name]) as stored:
      assert any(key.startswith('attention_readout/') for key in stored.files)
      assert (name == 'point_head') == ('temporal_tile_posenc/embeddings' in stored.files)


def test_run_released_equals_backbone_prenorm_then_heads(released_files):
  config, paths = released_files
  params = ego4d.load_released_files(config, paths['backbone'], paths['point_head'],
                                     paths['box_head'])
  video, query_xy, query_boxes = _clip_and_queries(config)
  out = ego4d.run_released(params, video, query_xy, query_boxes, config=config, seed=3)

  # By hand: the plain backbone (default decoder lattice) with the same 'default' key.
  backbone = moog_model.build_moog(config.model).clone(return_corrected_prenorm=True)
  point_head = ar.build_attention_readout(config.point_head)
  box_head = ar.build_attention_readout(config.box_head)

  @jax.jit
  def by_hand(params, video, query_xy, query_boxes):
    features = backbone.apply({'params': params['backbone']}, video, train=False,
                              rngs={'default': jax.random.key(3)})['states_corrected_prenorm']
    return (features,
            point_head.apply({'params': params['point_head']}, features, query_xy),
            box_head.apply({'params': params['box_head']}, features, query_boxes))

  features, points, boxes = by_hand(params, video, query_xy, query_boxes)
  np.testing.assert_allclose(out['features'], features, rtol=1e-5, atol=1e-5)
  for key in ('position', 'visibility_logit', 'certainty_logit'):
    np.testing.assert_allclose(out[key], points[key], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out['boxes'], boxes['boxes'], rtol=1e-4, atol=1e-5)

  n, t = query_xy.shape[1], config.num_frames
  assert out['position'].shape == (2, n, t, 2) and out['visible'].shape == (2, n, t)
  assert out['boxes'].shape == (2, t, 2, 4)
  assert all(np.isfinite(v).all() for k, v in out.items() if k != 'visible')


def test_run_released_without_heads_gives_features_only(released_files):
  config, paths = released_files
  params = ego4d.load_released_files(config, paths['backbone'])
  assert set(params) == {'backbone'}
  video, _, _ = _clip_and_queries(config)
  out = ego4d.run_released(params, video, config=config)
  assert set(out) == {'features'}
  assert out['features'].shape == (2, config.num_frames, config.model.num_tokens,
                                   config.model.token_dim)


def test_loaded_params_equal_the_written_ones(released_files):
  config, paths = released_files
  params = ego4d.load_released_files(config, paths['backbone'], paths['point_head'],
                                     paths['box_head'])
  for name in ('point_head', 'box_head'):
    flat = checkpoint.flatten_params(params[name])
    with np.load(paths[name]) as stored:
      assert {npz_io.project_head_to_released_key(k) for k in flat} == set(stored.files)
      for key, value in flat.items():
        np.testing.assert_array_equal(value, stored[npz_io.project_head_to_released_key(key)])


def test_wrong_video_shape_is_refused(released_files):
  config, paths = released_files
  params = ego4d.load_released_files(config, paths['backbone'])
  with pytest.raises(ValueError, match='video must be'):
    ego4d.run_released(params, np.zeros((1, config.num_frames, 16, 16, 3)), config=config)


def test_head_files_are_not_interchangeable(released_files):
  config, paths = released_files
  with pytest.raises(checkpoint.CheckpointError, match='tile_embedding'):
    ego4d.load_released_files(config, paths['backbone'], point_head_npz=paths['box_head'])


def test_released_config_has_the_released_sizes():
  config = ego4d.released_config()
  ego4d.validate_config(config)
  assert (config.num_frames, config.resolution) == (16, 256)
  counts = {name: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
            for name, tree in ego4d.models_for(config).abstract_params().items()}
  assert counts == {'backbone': 35_193_811, 'point_head': 11_338_760,
                    'box_head': 11_424_832}


def test_config_validation_names_the_field():
  config = ego4d.tiny_config()
  config.box_head.num_frames = 4
  with pytest.raises(ValueError, match='box_head.num_frames'):
    ego4d.validate_config(config)
  with pytest.raises(ValueError, match='sizes must be one of'):
    ego4d.get_config('huge')


def test_prepare_clip_cuts_resizes_and_scales():
  config = ego4d.tiny_config()
  video = np.full((config.num_frames + 3, 20, 24, 3), 255, np.uint8)
  clip = ego4d.prepare_clip(video, config)
  assert clip.shape == (config.num_frames, config.resolution, config.resolution, 3)
  assert clip.dtype == np.float32
  np.testing.assert_allclose(clip, 1.0, atol=1e-6)
  with pytest.raises(ValueError, match='clips of 8 frames'):
    ego4d.prepare_clip(video[:3], config)


def test_tapvid_queries_become_colab_point_queries():
  """TAP-Vid (t, y, x) pixels of a 256² frame -> (x, y) / 256, as the colab."""
  query_points = jnp.asarray([[[0.0, 10.0, 200.0], [0.0, 255.0, 0.5]]])
  query_xy, frame = heads.normalise_query_points(query_points, (256, 256))
  np.testing.assert_allclose(query_xy, np.asarray(query_points)[..., 1:3][..., ::-1] / 256.0)
  np.testing.assert_array_equal(frame, 0)


# ---------------------------------------------------------------------------------------
# 3. Notebook helpers (`moog/notebook_utils.py`, section 5 of colabs/moog_readouts.ipynb).
# ---------------------------------------------------------------------------------------


def _fake_batch(num_frames=8, size=16, frame0_tracks=True):
  rng = np.random.default_rng(0)
  query_t = np.asarray([0.0, 0.0, 3.0, 0.0]) if frame0_tracks else np.full(4, 2.0)
  query_points = np.stack([query_t, rng.uniform(0, size, 4), rng.uniform(0, size, 4)], -1)
  boxes_valid = np.zeros((1, num_frames, 3), bool)
  boxes_valid[0, :, 1] = True
  boxes_valid[0, 2:, 2] = True  # Appears after frame 0: not a query.
  return {
      'video': rng.uniform(size=(1, num_frames, size, size, 3)).astype(np.float32),
      'query_points': query_points[None].astype(np.float32),
      'target_points': rng.uniform(0, size, (1, 4, num_frames, 2)).astype(np.float32),
      'occluded': rng.uniform(size=(1, 4, num_frames)) > 0.7,
      'tracks_valid': np.asarray([[True, False, True, True]]),
      'boxes': np.tile(np.float32([0.1, 0.2, 0.6, 0.7]), (1, num_frames, 3, 1)),
      'boxes_valid': boxes_valid,
  }


def test_clip_from_a_batch_keeps_frame0_queries_with_ground_truth():
  from moog import notebook_utils  # pylint: disable=g-import-not-at-top
  config = ego4d.tiny_config()
  batch = _fake_batch()
  clip = notebook_utils.ego4d_clip(config, batch=batch)
  assert clip.video.shape == (1, 8, 32, 32, 3)
  # Valid tracks queried on frame 0: 0 and 3 (1 is invalid, 2 is queried on frame 3).
  np.testing.assert_allclose(clip.query_xy[0],
                             batch['query_points'][0, [0, 3]][:, [2, 1]] / 16.0)
  np.testing.assert_allclose(clip.target_points, batch['target_points'][0, [0, 3]] * 2.0)
  np.testing.assert_array_equal(clip.target_visible, ~batch['occluded'][0, [0, 3]])
  assert clip.query_boxes.shape == (1, 1, 4) and clip.boxes.shape == (8, 1, 4)


def test_clip_without_frame0_queries_falls_back_to_grid_and_default_box():
  from moog import notebook_utils  # pylint: disable=g-import-not-at-top
  batch = _fake_batch(frame0_tracks=False)
  batch['boxes_valid'][:] = False
  clip = notebook_utils.ego4d_clip(ego4d.tiny_config(), batch=batch, query_grid=3)
  assert clip.query_xy.shape == (1, 9, 2) and clip.target_points is None
  np.testing.assert_allclose(clip.query_boxes, [[[0.25, 0.25, 0.75, 0.75]]])
  assert clip.boxes is None


def test_notebook_helpers_predict_and_plot_a_video_file(released_files, tmp_path):
  from moog import notebook_utils  # pylint: disable=g-import-not-at-top
  config, paths = released_files
  path = str(tmp_path / 'clip.npy')
  np.save(path, np.random.default_rng(1).integers(0, 256, (9, 20, 28, 3), np.uint8))
  clip = notebook_utils.ego4d_clip(config, video_path=path, query_grid=2)
  assert clip.video.shape == (1, 8, 32, 32, 3) and clip.query_xy.shape == (1, 4, 2)
  params = ego4d.load_released_files(config, paths['backbone'], paths['point_head'],
                                     paths['box_head'])
  predictions = notebook_utils.ego4d_predict(params, clip, config)
  assert predictions['points'].shape == (4, 8, 2) and predictions['boxes'].shape == (8, 1, 4)
  assert np.all((predictions['points'] >= 0) & (predictions['points'] <= 32))
  figure = notebook_utils.plot_ego4d(clip, predictions, frames=[0, 7])
  assert len(figure.axes) == 2 * 2  # Predicted points and boxes (no ground truth).
  clip_with_truth = notebook_utils.ego4d_clip(config, batch=_fake_batch())
  figure = notebook_utils.plot_ego4d(
      clip_with_truth, notebook_utils.ego4d_predict(params, clip_with_truth, config))
  assert len(figure.axes) == 4 * 4  # Ground truth and predictions of both heads.


def test_validation_batch_of_another_dataset_has_16_frames(tmp_path):
  from moog import notebook_utils  # pylint: disable=g-import-not-at-top
  batch = notebook_utils.ego4d_validation_batch(
      'synthetic_movi/32x32_16f_2x_train1_val1', 16, str(tmp_path / 'tfds'))
  assert batch['video'].shape == (1, 16, 32, 32, 3)
  assert {'query_points', 'target_points', 'occluded', 'boxes', 'boxes_valid'} <= set(batch)


@pytest.mark.slow
def test_release_size_run_released_on_random_weights(tmp_path):
  """The full released sizes end to end (files written and loaded): about 1-2 min on CPU."""
  config = ego4d.released_config()
  paths = ego4d.write_random_released_files(config, str(tmp_path), scale=0.02)
  params = ego4d.load_released_files(config, paths['backbone'], paths['point_head'],
                                     paths['box_head'])
  video = np.random.default_rng(0).uniform(size=(1, 16, 256, 256, 3)).astype(np.float32)
  out = ego4d.run_released(params, video, np.full((1, 3, 2), 0.5, np.float32),
                           np.float32([[[0.2, 0.2, 0.6, 0.6]]]), config=config)
  assert out['features'].shape == (1, 16, 1024, 512)
  assert out['position'].shape == (1, 3, 16, 2) and out['boxes'].shape == (1, 16, 1, 4)
  assert all(np.isfinite(v).all() for k, v in out.items() if k != 'visible')
