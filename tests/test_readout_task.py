"""Readout training on a frozen pretrained backbone, through the shared trainer."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import moog_movi
from configs import moog_readout_movi
from configs import moog_readout_tiny
from configs import moog_tiny
from moog import model as moog_model
from moog import task as moog_task
from moog.readouts import heads
from moog.readouts import task as readout_task
from videolib import checkpoint
from videolib import train
from videolib.data import movi_testing
from videolib.data import pipeline
from videolib.data import synthetic

_DATASET = 'synthetic_movi/' + synthetic.config_name(32, 8, num_train=16, num_validation=8)


def _shrink(config, data_dir, **overrides):
  """Tiny model, a few steps, batch 8 (one example per simulated device)."""
  config.model = moog_model.tiny_model_config()
  config.data.update(name=_DATASET, data_dir=str(data_dir), num_frames=4)
  config.update(batch_size=8, eval_batch_size=8, log_every_steps=1, num_summary_videos=1)
  config.optimizer.warmup_steps = 1
  config.update_from_flattened_dict(overrides)
  return config


def _readout_config(data_dir, pretrained_dir, arg=None, **overrides):
  config = _shrink(moog_readout_tiny.get_config(arg), data_dir, **overrides)
  config.init_from = pretrained_dir
  config.data.update(num_tracks=8, max_instances=4)
  config.readout.update(width=16, num_heads=2, qkv_size=16, mlp_dim=32, num_fourier_bases=4,
                        depth_subsample_train=2)
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='module')
def pretrained(data_dir, tmp_path_factory):
  """Two steps of MooG pretraining: enough for a checkpoint to read out from."""
  workdir = str(tmp_path_factory.mktemp('pretrain'))
  config = _shrink(moog_tiny.get_config(), data_dir, num_train_steps=2, eval_every_steps=2,
                   checkpoint_every_steps=2)
  train.train_and_evaluate(config, workdir, moog_task.MooGTask(config))
  return workdir


@pytest.fixture(scope='module')
def readout_run(data_dir, pretrained, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('readout'))
  # Unanchored heads (upstream's parametrisation) start far from the answer, so 30 steps
  # show every loss falling; anchored heads start at the never-moving track
  # (tests/test_readouts.py).
  config = _readout_config(data_dir, pretrained, num_train_steps=30, eval_every_steps=30,
                           checkpoint_every_steps=30, **{'optimizer.peak_lr': 3e-3,
                                                         'readout.anchor_to_query': False})
  result = train.train_and_evaluate(config, workdir, readout_task.ReadoutTask(config))
  return config, workdir, result


def _records(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def _params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                                  item_names=('state', 'data', 'config'))
  state = manager.restore(manager.latest_step(),
                          args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
  manager.close()
  return state['params']


def test_readout_training_lowers_every_head_loss(readout_run):
  _, workdir, _ = readout_run
  records = _records(workdir, 'train')
  for name in ('points/loss', 'depth/loss', 'boxes/loss', 'loss'):
    first = np.mean([r[name] for r in records[:3]])
    last = np.mean([r[name] for r in records[-3:]])
    assert last < 0.8 * first, (name, first, last)


def test_backbone_is_bitwise_unchanged_and_heads_trained(readout_run, pretrained):
  _, workdir, _ = readout_run
  before, after = _params(pretrained), _params(workdir)
  for part in readout_task.BACKBONE_PARTS:
    for a, b in zip(jax.tree.leaves(before[part]), jax.tree.leaves(after[part])):
      np.testing.assert_array_equal(a, b)
  assert sorted(set(after) - set(before)) == ['box_readout', 'depth_readout', 'point_readout']


def test_eval_reports_every_metric_and_eval_mode_writes_json(readout_run):
  config, workdir, result = readout_run
  for name in ('points_first/average_jaccard', 'points_first/occlusion_accuracy',
               'points_strided/average_jaccard', 'depth/abs_rel', 'depth/delta_1.25',
               'boxes/box_iou', 'static_points_first/average_jaccard',
               'static_points_strided/average_jaccard', 'static_boxes/box_iou',
               'constant_depth/abs_rel'):
    assert np.isfinite(result[f'eval_{name}']), name
  # Longer clips in slices: the eval-only mode on 8-frame videos, 4-frame slices.
  config.data.num_frames = 8
  config.readout.eval_slice_frames = 4
  metrics = train.evaluate(config, workdir, readout_task.ReadoutTask(config))
  with open(os.path.join(workdir, 'eval_validation_step30.json')) as f:
    saved = json.load(f)
  assert saved['step'] == 30 and saved['boxes/box_iou'] == metrics['boxes/box_iou']
  assert 0.0 <= metrics['points_first/average_jaccard'] <= 1.0


def test_readouts_train_on_movi_with_lifted_point_tracks(pretrained, tmp_path):
  # MOVi-E's layout (the ray-traced stand-in): tracks come from the 3-D lift, boxes and
  # depth from their layers, on the backbone pretrained on the synthetic data.
  name = movi_testing.write(str(tmp_path / 'movi'), 32, num_train=8, num_validation=8)
  config = _readout_config(tmp_path / 'movi', pretrained, num_train_steps=30,
                           eval_every_steps=30, checkpoint_every_steps=30,
                           **{'optimizer.peak_lr': 3e-3, 'readout.anchor_to_query': False,
                              'data.name': name, 'data.max_instances': 3})
  workdir = str(tmp_path / 'readout')
  result = train.train_and_evaluate(config, workdir, readout_task.ReadoutTask(config))
  records = _records(workdir, 'train')
  for name in ('points/loss', 'depth/loss', 'boxes/loss'):
    first = np.mean([r[name] for r in records[:3]])
    last = np.mean([r[name] for r in records[-3:]])
    assert last < 0.8 * first, (name, first, last)
  for name in ('points_first/average_jaccard', 'depth/abs_rel', 'boxes/box_iou'):
    assert np.isfinite(result[f'eval_{name}']), name


def test_readout_checkpoint_is_refused_under_different_head_settings(readout_run):
  config, workdir, _ = readout_run
  changed = config.copy_and_resolve_references()
  changed.readout.anchor_to_query = True
  with pytest.raises(checkpoint.CheckpointError, match='readout.anchor_to_query: False -> True'):
    train.evaluate(changed, workdir, readout_task.ReadoutTask(changed))

@pytest.mark.parametrize('arg, overrides, message', [
    ('grid_rec', {}, "backbone: 'moog' -> 'grid_rec'"),
    (None, {'model.token_dim': 16}, 'model.token_dim: 32 -> 16'),
    (None, {'motion_guided.mode': 'ratio'}, "motion_guided: .*'mode': 'off'.* -> .*'ratio'"),
])
def test_mismatched_backbone_checkpoint_is_refused(data_dir, pretrained, arg, overrides,
                                                    message):
  overrides = dict(overrides)
  if arg == 'grid_rec':  # A grid-compatible model, so only the backbone kind differs.
    overrides['model.num_tokens'] = 64
  config = _readout_config(data_dir, pretrained, arg, **overrides)
  task = readout_task.ReadoutTask(config)
  with pytest.raises(checkpoint.CheckpointError, match=message):
    task.validate_config(config)


def test_describe_counts_every_frame_of_backbone_and_recurrent_heads(data_dir, pretrained):
  # XLA counts a loop body once; `describe` counts on the unrolled step, so the FLOPs of
  # a twice-as-long clip double (the rolled loops would count about the same).
  flops = {}
  for num_frames in (4, 8):
    config = _readout_config(data_dir, pretrained, **{'data.num_frames': num_frames})
    flops[num_frames] = train.describe(config, readout_task.ReadoutTask(config))[
        'train_step_flops']
  assert flops[8] / flops[4] == pytest.approx(2, rel=0.05)


def test_unrolled_heads_compute_the_same_outputs_as_the_rolled_loops(data_dir, pretrained):
  config = _readout_config(data_dir, pretrained)
  task = readout_task.ReadoutTask(config)
  batch = next(iter(pipeline.make_eval_iterator(config.data, global_batch_size=8)))
  params = task.init(jax.random.key(0), batch)
  queries = heads.normalise_query_points(batch['query_points'], (32, 32))
  rolled = task.run(params, batch, jax.random.key(1), point_queries=queries)
  unrolled = task.for_cost_analysis(config).run(params, batch, jax.random.key(1),
                                                point_queries=queries)
  assert set(unrolled) == set(rolled)
  for name in rolled:
    np.testing.assert_allclose(unrolled[name], rolled[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)


def _correlation_config(data_dir, pretrained, **overrides):
  return _readout_config(data_dir, pretrained,
                         **{'readout.tracking_head': 'correlation', 'readout.map_size': 16,
                            'readout.map_channels': 8,
                            # A window as large as the map: the expectation is continuous
                            # in the scores, so the slices' float rounding cannot flip an
                            # argmax between two distant near-equal peaks.
                            'readout.window_radius': 16, **overrides})


@pytest.mark.parametrize('overrides, message', [
    ({'readout.tracking_head': 'flow'}, "tracking_head='flow' must be one of"),
    ({'readout.window_radius': -1}, 'window_radius=-1'),
])
def test_bad_tracking_head_settings_are_refused(data_dir, pretrained, overrides, message):
  config = _readout_config(data_dir, pretrained, **overrides)
  with pytest.raises(ValueError, match=message):
    readout_task.ReadoutTask(config).validate_config(config)


@pytest.mark.slow  # 18 s; the heads' own tests (tests/test_readouts.py) run by default.
def test_correlation_heads_learn_and_evaluate_in_slices_as_in_one_pass(data_dir, pretrained,
                                                                      tmp_path):
  config = _correlation_config(data_dir, pretrained, num_train_steps=20, eval_every_steps=20,
                               checkpoint_every_steps=20, **{'optimizer.peak_lr': 3e-3})
  task = readout_task.ReadoutTask(config)
  workdir = str(tmp_path / 'readout')
  result = train.train_and_evaluate(config, workdir, task)
  records = _records(workdir, 'train')
  for name, factor in (('points/correlation', 0.98), ('points/loss', 0.9), ('boxes/loss', 1.0)):
    first = np.mean([r[name] for r in records[:3]])
    last = np.mean([r[name] for r in records[-3:]])
    assert last < factor * first, (name, first, last)
  assert np.isfinite(result['eval_points_first/average_jaccard'])
  assert np.isfinite(result['eval_boxes/box_iou'])

  config.data.num_frames = 8
  batch = next(iter(pipeline.make_eval_iterator(config.data, global_batch_size=8)))
  params = _params(workdir)
  queries = heads.normalise_query_points(batch['query_points'], (32, 32))
  whole = task.run(params, batch, jax.random.key(1), point_queries=queries,
                   heads=('points', 'boxes'))
  sliced = task.run(params, batch, jax.random.key(1), point_queries=queries,
                    heads=('points', 'boxes'), slice_frames=2)
  for name in ('position', 'visible', 'boxes'):
    np.testing.assert_allclose(sliced[name], whole[name], atol=1e-5, err_msg=name)


def test_bad_batches_are_refused_on_the_host(data_dir, pretrained):
  config = _readout_config(data_dir, pretrained)
  task = readout_task.ReadoutTask(config)
  batch = next(iter(pipeline.make_eval_iterator(config.data, global_batch_size=8)))
  task.validate_batch(batch)
  batch['query_points'][0, 0, 1] = 40.0  # y outside the 32-pixel frame
  with pytest.raises(ValueError, match='y outside the frame'):
    task.validate_batch(batch)


def test_learned_initial_tokens_are_part_of_the_loaded_frozen_backbone():
  config = moog_readout_tiny.get_config()
  assert config.model.state_init == 'learned'  # The tiny configs' choice.
  task = readout_task.ReadoutTask(config)
  assert task.init_from_prefixes(config) == tuple(sorted(
      readout_task.BACKBONE_PARTS + ('initial_tokens',)))
  params = {name: {'w': np.zeros(2)} for name in task.init_from_prefixes(config)}
  params['point_readout'] = {'w': np.zeros(2)}
  frozen = task.frozen_params(params)
  assert frozen['initial_tokens'] == {'w': True} and frozen['point_readout'] == {'w': False}
  config.model.state_init = 'noise'
  assert readout_task.ReadoutTask(config).init_from_prefixes(config) == (
      readout_task.BACKBONE_PARTS)


def test_trivial_baselines_on_hand_made_inputs():
  query_points = np.array([[[0.0, 3.0, 5.0]]], np.float32)  # (t, y, x)
  positions, occluded = readout_task.static_point_predictions(query_points, 3)
  np.testing.assert_array_equal(positions, [[[[5.0, 3.0]] * 3]])
  assert not occluded.any()
  boxes = readout_task.static_box_predictions(np.array([[[0.1, 0.2, 0.3, 0.4]]]), 2)
  assert boxes.shape == (1, 2, 1, 4)
  depth = np.arange(2 * 2 * 2 * 2, dtype=np.float32).reshape(1, 2, 2, 2, 2)[..., :1] + 1.0
  # Frame 0 holds 1, 3, 5, 7: median 4, everywhere.
  np.testing.assert_array_equal(readout_task.constant_depth_predictions(depth), 4.0)


def _paper_readout_params(arg):
  config = moog_readout_movi.get_config(arg)
  spec = pipeline.batch_spec(config.data, 8)
  task = readout_task.ReadoutTask(config)
  return config, train.count_params_per_part(jax.eval_shape(task.init, jax.random.key(0), spec))


def test_paper_readout_config_has_full_size_heads_on_the_paper_backbone():
  config, params = _paper_readout_params('synthetic')
  backbone = sum(params[part] for part in readout_task.BACKBONE_PARTS)
  assert backbone == 34_726_787
  # docs/moog_reference.md §11: a point head alone computes to about 11.3-11.4 M parameters.
  assert 11.3e6 < params['point_readout'] < 11.4e6
  assert params['depth_readout'] > 10e6 and params['box_readout'] > 10e6
  assert config.readout.tasks == readout_task.HEADS
  assert 'tracks' in config.data.features


def test_paper_readout_config_on_movi_trains_all_three_heads():
  # MOVi's point tracks are lifted from its layers (videolib/data/movi_tracks.py).
  config, params = _paper_readout_params(None)
  assert config.data.name == 'movi_e/128x128'
  assert config.readout.tasks == readout_task.HEADS
  assert 'tracks' in config.data.features
  assert 11.3e6 < params['point_readout'] < 11.4e6 and params['box_readout'] > 10e6


@pytest.mark.slow
def test_paper_readout_config_runs_one_training_step_on_cpu(tmp_path):
  """One step of the paper backbone, then one step of the full-size heads on it."""
  shrink = {'data.name': 'synthetic_movi/128x128_8f_train8_val8',
            'data.data_dir': str(tmp_path / 'tfds'), 'data.num_frames': 2,
            'data.num_eval_examples': 8, 'batch_size': 8, 'eval_batch_size': 8,
            'num_train_steps': 1, 'num_summary_videos': 0}
  pretrain_dir, readout_dir = str(tmp_path / 'pretrain'), str(tmp_path / 'readout')
  pretrain = moog_movi.get_config('synthetic,res=128')
  pretrain.update_from_flattened_dict(shrink)
  train.train_and_evaluate(pretrain, pretrain_dir, moog_task.MooGTask(pretrain))
  config = moog_readout_movi.get_config('synthetic,res=128')
  config.update_from_flattened_dict({**shrink, 'init_from': pretrain_dir})
  result = train.train_and_evaluate(config, readout_dir, readout_task.ReadoutTask(config))
  for name in ('loss', 'eval_points_first/average_jaccard', 'eval_depth/abs_rel',
               'eval_boxes/box_iou'):
    assert np.isfinite(result[name]), name
