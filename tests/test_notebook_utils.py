"""The readout notebook's helpers on hand-made arrays (the notebook itself: test_notebook.py)."""

import math

import matplotlib.patches
import numpy as np
import pytest

from moog import notebook_utils
from moog.readouts import task as readout_task


def _batch_and_predictions(num_frames=4, size=8):
  """One video: a track moving right, a box moving down, depth = 1 + row index."""
  video = np.zeros((1, num_frames, size, size, 3), np.float32)
  target_points = np.zeros((1, 2, num_frames, 2), np.float32)
  target_points[0, 0, :, 0] = 1.5 + np.arange(num_frames)  # x
  target_points[0, 0, :, 1] = 2.5  # y
  occluded = np.zeros((1, 2, num_frames), bool)
  occluded[0, 0, -1] = True
  boxes = np.zeros((1, num_frames, 2, 4), np.float32)
  boxes[0, :, 0] = [0.25, 0.5, 0.5, 0.75]  # ymin, xmin, ymax, xmax
  boxes_valid = np.zeros((1, num_frames, 2), bool)
  boxes_valid[0, :, 0] = True
  depth = np.broadcast_to(1.0 + np.arange(size, dtype=np.float32)[:, None, None],
                          (1, num_frames, size, size, 1)).copy()
  batch = dict(video=video, target_points=target_points, occluded=occluded,
               tracks_valid=np.array([[True, False]]), query_points=np.zeros((1, 2, 3)),
               boxes=boxes, boxes_valid=boxes_valid, depth=depth, _mask=np.array([True]))
  predictions = dict(points=target_points + 1.0, visible=~occluded, boxes=boxes * 0.5,
                     depth=depth * 2.0)
  return batch, predictions


def test_default_frames_are_evenly_spaced_from_first_to_last():
  assert notebook_utils.default_frames(8) == [0, 2, 5, 7]
  assert notebook_utils.default_frames(2) == [0, 1]


def test_point_track_figure_draws_only_valid_tracks_at_their_raster_positions():
  batch, predictions = _batch_and_predictions()
  figure = notebook_utils.plot_point_tracks(batch, predictions, frames=[0, 3])
  axes = np.asarray(figure.axes).reshape(2, 2)
  # Ground truth at frame 3: one track (the padding track is not drawn), trail over 0..3.
  (trail,) = axes[0, 1].lines
  np.testing.assert_allclose(trail.get_xydata(), batch['target_points'][0, 0])
  (dot,) = axes[0, 1].collections
  np.testing.assert_allclose(dot.get_offsets(), [[4.5, 2.5]])
  assert len(dot.get_facecolors()) == 0  # Occluded at frame 3: hollow.
  (predicted_dot,) = axes[1, 1].collections
  np.testing.assert_allclose(predicted_dot.get_offsets(), [[5.5, 3.5]])
  # The image covers raster pixels [0, W] x [0, H], y down.
  assert axes[0, 0].images[0].get_extent() == [0, 8, 8, 0]
  assert axes[0, 0].get_ylabel() == 'ground truth' and axes[1, 0].get_ylabel() == 'predicted'


def test_box_figure_draws_boxes_in_pixels_and_only_frame0_conditioned_predictions():
  batch, predictions = _batch_and_predictions()
  batch['boxes_valid'][0, 0, 0] = False  # No frame-0 box: no query, no predicted box.
  figure = notebook_utils.plot_boxes(batch, predictions, frames=[1, 2])
  axes = np.asarray(figure.axes).reshape(2, 2)
  (gt_box,) = [p for p in axes[0, 0].patches if isinstance(p, matplotlib.patches.Rectangle)]
  assert (gt_box.get_x(), gt_box.get_y()) == (4.0, 2.0)
  assert (gt_box.get_width(), gt_box.get_height()) == (2.0, 2.0)
  assert not axes[1, 0].patches


def test_depth_figure_shares_the_ground_truth_colour_scale():
  batch, predictions = _batch_and_predictions()
  figure = notebook_utils.plot_depth(batch, predictions, frames=[0, 1])
  axes = np.asarray(figure.axes)[:6].reshape(3, 2)
  gt_image, pred_image = axes[1, 0].images[0], axes[2, 0].images[0]
  assert gt_image.get_clim() == pred_image.get_clim() == (1.0, 8.0)
  np.testing.assert_allclose(pred_image.get_array(), batch['depth'][0, 0, ..., 0] * 2.0)


def test_plot_readouts_makes_one_figure_per_head_present():
  batch, predictions = _batch_and_predictions()
  assert len(notebook_utils.plot_readouts(batch, predictions)) == 3
  del predictions['depth']
  assert len(notebook_utils.plot_readouts(batch, predictions)) == 2


def test_metrics_table_pairs_each_readout_with_its_baseline():
  metrics = {'boxes/box_iou': 0.25, 'static_boxes/box_iou': 0.75, 'depth/abs_rel': 0.5}
  rows = notebook_utils.metrics_table(metrics)
  assert rows[0][0] == 'depth AbsRel (lower is better)' and math.isnan(rows[0][2])
  assert rows[1] == ('boxes mIoU', 0.25, 0.75, 'never-moving box')
  text = notebook_utils.format_metrics_table(rows)
  assert text.splitlines()[2].split()[-4:] == ['0.250', '0.750', 'never-moving', 'box']


def test_metric_rows_name_keys_the_readout_task_reports():
  # The keys eval_fn emits: heads' metrics and the trivial baselines' (REPORTED_TAPVID).
  for _, key, baseline_key, _ in notebook_utils.METRIC_ROWS:
    prefix, name = key.split('/')
    assert prefix in ('points_first', 'points_strided', 'depth', 'boxes')
    if prefix.startswith('points'):
      assert name in readout_task.REPORTED_TAPVID + ('average_pts_within_thresh',)
      assert baseline_key == f'static_{key}'


def test_backbone_matches_compares_every_backbone_part_bitwise():
  params = {part: {'w': np.ones(3, np.float32)} for part in readout_task.BACKBONE_PARTS}
  pretrained = notebook_utils.Run(config=None, params=params, source='a')
  readout = notebook_utils.Run(config=None, params=dict(params, box_readout={}), source='b')
  assert notebook_utils.backbone_matches(pretrained, readout)
  changed = dict(params, encoder={'w': np.array([1.0, 1.0, 1.0 + 1e-7], np.float32)})
  assert not notebook_utils.backbone_matches(
      pretrained, notebook_utils.Run(config=None, params=changed, source='c'))


def test_quick_configs_keep_the_tiny_model_and_shorten_the_schedule():
  pretrain = notebook_utils.quick_pretrain_config(20, data_dir='/tmp/x')
  readout = notebook_utils.quick_readout_config(30, '/tmp/moog')
  assert pretrain.model == readout.model  # A readout run must match its backbone.
  assert (pretrain.num_train_steps, pretrain.eval_every_steps) == (20, 20)
  assert pretrain.optimizer.warmup_steps == 4 and pretrain.log_every_steps == 5
  assert readout.task == 'readout' and readout.init_from == '/tmp/moog'
  assert readout.checkpoint_every_steps == 30 and readout.data.data_dir is None


def test_load_readout_task_refuses_a_pretraining_run():
  run = notebook_utils.Run(config=notebook_utils.quick_pretrain_config(2), params={},
                           source='/tmp/run/checkpoints/2')
  with pytest.raises(ValueError, match='not a readout run'):
    notebook_utils.load_readout_task(run)
