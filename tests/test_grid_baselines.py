"""Tests for moog.grid_baselines: the Grid and Grid Rec. on-the-grid baselines."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moog import grid_baselines
from moog import model as moog_model

jit = functools.partial(jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def _model_config():
  """Tiny model on 16 x 16 frames: stride 4 -> 4 x 4 = 16 grid cells = 16 tokens."""
  config = moog_model.tiny_model_config()
  config.num_tokens = 16
  return config


@pytest.fixture(scope='module')
def models():
  config = _model_config()
  video = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 16, 16, 3))
  built = {}
  for kind in grid_baselines.BACKBONES:
    model = grid_baselines.build_backbone(kind, config)
    params = jit(lambda key, model=model: model.init({'params': key, 'default': key}, video,
                                                     train=True))(jax.random.PRNGKey(1))
    built[kind] = (model, params)
  return built, video


def test_backbones_share_moog_parameter_tree_and_count(models):
  built, video = models
  counts = {kind: sum(x.size for x in jax.tree.leaves(params))
            for kind, (_, params) in built.items()}
  # tiny_model_config with 16 tokens: MooG's parameters do not depend on the token count.
  assert counts == {'moog': 39587, 'grid': 39587, 'grid_rec': 39587}
  trees = {kind: jax.tree.structure(params) for kind, (_, params) in built.items()}
  assert trees['grid'] == trees['moog'] == trees['grid_rec']
  for kind, (model, params) in built.items():
    outputs = jit(lambda p, model=model: model.apply(p, video, train=False,
                                                     rngs={'default': jax.random.PRNGKey(2)}))(
                                                         params)
    assert outputs['states_corrected'].shape == (2, 3, 16, 32), kind
    assert outputs['states_concat'].shape == (2, 3, 32, 32), kind
    assert outputs['video_predicted'].shape == (2, 3, 8, 8, 3), kind


def _corrected(model, params, video):
  return model.apply(params, video, train=False, rngs={'default': jax.random.PRNGKey(3)})[
      'states_corrected']


def test_grid_has_no_recurrence_and_grid_rec_has(models):
  """Changing frame 0 changes later states only for the recurrent backbones."""
  built, video = models
  changed = video.at[:, 0].set(1.0 - video[:, 0])
  for kind, (model, params) in built.items():
    before, after = _corrected(model, params, video), _corrected(model, params, changed)
    later_change = float(jnp.max(jnp.abs(before[:, 1:] - after[:, 1:])))
    if kind == 'grid':
      assert later_change == 0.0
    else:
      assert later_change > 1e-3, kind
    assert float(jnp.max(jnp.abs(before[:, 0] - after[:, 0]))) > 1e-3, kind


def test_grid_rec_state_tokens_stay_tied_to_their_cells(models):
  """Permuting the grid cells permutes Grid Rec.'s state tokens the same way (token i is
  cell i); MooG's state does not move with the cells at all (its tokens are off the grid)."""
  built, _ = models
  keys = jax.random.split(jax.random.PRNGKey(4), 2)
  predicted = jax.random.normal(keys[0], (2, 16, 32))
  cells = jax.random.normal(keys[1], (2, 16, 32))
  permutation = np.random.default_rng(0).permutation(16)

  def correct(kind, predicted, cells):
    model, params = built[kind]
    return model.apply(params, predicted, cells, method=model.correct)

  base = correct('grid_rec', predicted, cells)
  permuted = correct('grid_rec', predicted[:, permutation], cells[:, permutation])
  np.testing.assert_allclose(permuted, base[:, permutation], atol=1e-5)
  # Moving only the cells (not the state) changes each token's own-cell input.
  assert float(jnp.max(jnp.abs(correct('grid_rec', predicted, cells[:, permutation]) - base))) > 0.1
  moog_base = correct('moog', predicted, cells)
  np.testing.assert_allclose(correct('moog', predicted, cells[:, permutation]), moog_base,
                             atol=1e-5)


@pytest.mark.parametrize('field, value, message', [
    ('num_tokens', 8, 'must equal the number of encoder grid cells, 16'),
    ('encoder_pos_embedding', 'concat', "encoder_pos_embedding='project_add'"),
])
def test_grid_configs_that_break_the_cell_tie_are_refused(field, value, message):
  config = _model_config()
  config[field] = value
  grid_baselines.validate_backbone_config('moog', config, 16)
  for kind in ('grid', 'grid_rec'):
    with pytest.raises(ValueError, match=message):
      grid_baselines.validate_backbone_config(kind, config, 16)
  with pytest.raises(ValueError, match='config.backbone'):
    grid_baselines.validate_backbone_config('grid2', _model_config(), 16)
