"""Tests for mgtc.task: pretraining and fine-tuning through the shared trainer."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mgtc_tiny
from mgtc import flops
from mgtc import task as mgtc_task
from videolib import checkpoint
from videolib import metrics
from videolib import train
from videolib.data import synthetic

_DATASET = "synthetic_movi/" + synthetic.config_name(32, 8, num_train=48, num_validation=16)


def _config(data_dir, arg="", **overrides):
  """The tiny config, shrunk further: 1 block x 32 wide, a few steps, batch 8."""
  config = mgtc_tiny.get_config(arg)
  config.data.name = _DATASET
  config.data.data_dir = str(data_dir)
  config.model.update(width=32, depth=1, num_heads=2, decoder_width=32, decoder_depth=1,
                      decoder_num_heads=2)
  config.update(batch_size=8, eval_batch_size=16, num_train_steps=4, log_every_steps=1,
                eval_every_steps=4, checkpoint_every_steps=4, num_summary_videos=1)
  config.optimizer.warmup_steps = 1
  config.update_from_flattened_dict(overrides)
  return config


def _records(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def pretrained(data_dir, tmp_path_factory):
  """A pretraining run long enough for its loss to fall.

  Raw-pixel targets: their loss falls within a few steps (the colour statistics are
  learnable at once), while the normalised target starts at its floor of ~1 for any
  structure-free prediction and needs far more steps to move.
  """
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  config = _config(data_dir, "stage=pretrain", num_train_steps=12, eval_every_steps=12,
                   checkpoint_every_steps=12, normalize_targets=False,
                   **{"optimizer.peak_lr": 3e-3})
  result = train.train_and_evaluate(config, workdir, mgtc_task.make_task(config))
  return workdir, result


def test_pretraining_loss_decreases_and_is_evaluated(pretrained):
  workdir, result = pretrained
  losses = [r["loss"] for r in _records(workdir, "train")]
  assert len(losses) == 12
  assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])
  assert np.isfinite(result["eval_loss"])
  assert os.path.isfile(os.path.join(workdir, "summaries", "mae_reconstruction_00000012.gif"))


def test_finetuning_learns_and_logs_top1_and_gflops(data_dir, tmp_path):
  config = _config(data_dir, "method=mgtc,ratio=0.5", num_train_steps=16,
                   eval_every_steps=16, checkpoint_every_steps=16,
                   **{"optimizer.peak_lr": 3e-3, "model.drop_path_rate": 0.0,
                      "label_smoothing": 0.0})
  task = mgtc_task.make_task(config)
  train.train_and_evaluate(config, str(tmp_path), task)
  losses = [r["loss"] for r in _records(tmp_path, "train")]
  assert np.mean(losses[-4:]) < np.mean(losses[:4])
  (final_eval,) = _records(tmp_path, "validation")
  assert 0.0 <= final_eval["top_1"] <= final_eval["top_5"] <= 1.0
  # 8 frames of 32^2 at patch 8: 64 tokens, 32 kept at 50%, plus the pixel score.
  expected = flops.analytic_gmacs(32, width=32, depth=1, patch_size=8, num_classes=8)
  expected += flops.scoring_gmacs(8, 32)
  assert final_eval["gflops_per_view"] == pytest.approx(expected, rel=1e-6)
  assert final_eval["gflops_per_video"] == pytest.approx(expected, rel=1e-6)


def test_finetuning_starts_from_the_pretrained_backbone(pretrained, data_dir, tmp_path):
  pretrain_dir, _ = pretrained
  # peak_lr 0 keeps the parameters where they started, so the checkpoint shows the init.
  config = _config(data_dir, num_train_steps=1, eval_every_steps=1,
                   checkpoint_every_steps=1, init_from=pretrain_dir,
                   **{"optimizer.peak_lr": 0.0, "optimizer.weight_decay": 0.0})
  task = mgtc_task.make_task(config)
  train.train_and_evaluate(config, str(tmp_path), task)
  fresh = jax.jit(task.init)(jax.random.key(config.seed),
                             {"video": jnp.zeros((8, 8, 32, 32, 3))})
  backbone = ("patch_embed", "encoder")
  pretrained_params = checkpoint.load_params(pretrain_dir, fresh, prefixes=backbone)
  tuned = checkpoint.load_params(str(tmp_path), fresh, config)
  for name in backbone:
    jax.tree.map(np.testing.assert_array_equal, tuned[name], pretrained_params[name])
  for name in ("fc_norm", "head"):
    jax.tree.map(np.testing.assert_array_equal, tuned[name], fresh[name])
  assert not np.allclose(pretrained_params["encoder"]["block_0"]["mlp"]["fc1"]["kernel"],
                         fresh["encoder"]["block_0"]["mlp"]["fc1"]["kernel"])


def test_init_from_prefixes_reports_names_absent_from_the_checkpoint(pretrained, data_dir):
  pretrain_dir, _ = pretrained
  config = _config(data_dir)
  task = mgtc_task.make_task(config)
  params = jax.jit(task.init)(jax.random.key(0), {"video": jnp.zeros((8, 8, 32, 32, 3))})
  with pytest.raises(checkpoint.CheckpointError, match=r"\['head'\] not in both"):
    checkpoint.load_params(pretrain_dir, params, prefixes=("encoder", "head"))


@pytest.mark.parametrize("arg, overrides, error, field", [
    ("method=mgtc,ratio=1.0", {}, ValueError, "config.selection.drop_ratio=1.0"),
    ("method=random,ratio=-0.1", {}, ValueError, "config.selection.drop_ratio=-0.1"),
    # 4 frames -> 2 slices of 16 tokens; 75% drops 24 > the 16 outside the first slice.
    ("method=mgtc,ratio=0.75", {"model.num_frames": 4, "data.num_frames": 4}, ValueError,
     "config.selection.drop_ratio=0.75 with method='mgtc'"),
    ("method=running_cell,ratio=0.3", {}, ValueError, "not a running-cell ratio"),
    ("", {"model.num_frames": 7, "data.num_frames": 7}, ValueError,
     "config.model.num_frames=7 is not divisible by config.model.tubelet_size=2"),
    ("", {"model.image_size": 36, "data.resolution": 36}, ValueError,
     "config.model.image_size=36 is not divisible by config.model.patch_size=8"),
    ("", {"data.resolution": 24}, ValueError, "config.data.resolution=24"),
    ("", {"model.num_classes": 10}, ValueError, "config.model.num_classes=10"),
    ("", {"selection.apply_at": "always"}, ValueError, "config.selection.apply_at"),
    ("stage=pretrain", {"model.mask_ratio": 1.0}, ValueError, "config.model.mask_ratio=1.0"),
    # No prepared UCF101 under data_dir: the preparation commands, before any compile.
    ("", {"data.name": "ucf101/ucf101_1", "model.num_classes": 101}, FileNotFoundError,
     "tfds build ucf101 --config=ucf101_1"),
    ("", {"data.name": "ucf101/ucf101_1"}, ValueError, "ucf101/ucf101_1 has 101 classes"),
])
def test_bad_configs_fail_before_compiling_naming_the_field(
    data_dir, tmp_path, arg, overrides, error, field):
  config = _config(data_dir, arg, **overrides)
  with pytest.raises(error, match=field.replace("(", r"\(").replace(")", r"\)")):
    train.train_and_evaluate(config, str(tmp_path), mgtc_task.make_task(config))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_unknown_mode_names_the_field(data_dir):
  config = _config(data_dir)
  config.stage = "distill"
  with pytest.raises(ValueError, match="config.stage='distill'"):
    mgtc_task.make_task(config)


@pytest.mark.parametrize("method, ratio, kept, scored", [
    ("none", 0.25, 128, False),
    ("mgtc", 0.25, 96, True),
    ("random", 0.5, 64, False),
    ("tube", 0.25, 96, False),
    ("running_cell", 0.5, 64, False),
])
def test_gflops_per_view_counts_the_kept_tokens(data_dir, method, ratio, kept, scored):
  config = _config(data_dir, f"frames=16,method={method},ratio={ratio}")
  model = config.model
  expected = flops.analytic_gmacs(kept, width=model.width, depth=model.depth,
                                  patch_size=8, num_classes=8)
  if scored:
    expected += flops.scoring_gmacs(16, 32)
  assert mgtc_task.gflops_per_view(config) == pytest.approx(expected, rel=1e-9)
  if method == "mgtc":  # Agrees with the MGTC table of flops.py.
    assert expected == pytest.approx(flops.gflops_per_view(model, ratio, include_head=True))


def test_temporal_views_are_evenly_spaced_windows():
  video = jnp.arange(10.0).reshape(1, 10, 1, 1, 1)
  views = mgtc_task.temporal_views(video, num_frames=4, num_clips=3)
  assert views.shape == (1, 3, 4, 1, 1, 1)
  np.testing.assert_array_equal(views[0, :, 0, 0, 0, 0], [0.0, 3.0, 6.0])
  window = mgtc_task.random_temporal_window(jax.random.key(0), jnp.tile(video, (4, 1, 1, 1, 1)),
                                            4)
  starts = np.asarray(window[:, 0, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(window[:, :, 0, 0, 0]), starts[:, None] + np.arange(4))


def test_multi_view_eval_selects_per_view_and_averages_probabilities(data_dir):
  config = _config(data_dir, "method=mgtc,ratio=0.5", eval_clips=2,
                   **{"data.num_frames": 12})
  config.model.num_frames = 8
  task = mgtc_task.make_task(config)
  video = jax.random.uniform(jax.random.key(1), (2, 12, 32, 32, 3))
  params = jax.jit(task.init)(jax.random.key(0), {"video": video})
  params = jax.tree_util.tree_map_with_path(  # A visible head, so views differ.
      lambda path, x: x * 1000 if "head" in jax.tree_util.keystr(path) else x, params)
  batch = dict(video=video, label=jnp.array([3, 5]), _mask=jnp.array([True, False]))
  result = jax.jit(task.eval_fn)(params, batch, jax.random.key(0))
  per_view = [jax.nn.softmax(task.logits(params, video[:, s:s + 8], train=False))
              for s in (0, 4)]
  expected = metrics.classification_metrics((per_view[0] + per_view[1]) / 2,
                                            batch["label"], mask=batch["_mask"])
  for name in ("top_1", "top_5"):
    np.testing.assert_allclose(result[name], expected[name])
  nll = -np.log(((per_view[0] + per_view[1]) / 2)[0, 3])
  np.testing.assert_allclose(result["loss"], (nll, 1.0), rtol=1e-5)
  assert float(result["gflops_per_video"][0]) == pytest.approx(
      2 * float(result["gflops_per_view"][0]))
