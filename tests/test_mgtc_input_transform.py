"""`config.model.motion_input`: the optional motion input of mgtc/vit.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mgtc_tiny
from mgtc import task as mgtc_task
from mgtc import vit
from videolib import checkpoint


def _video(seed=0, batch=2):
  return jax.random.uniform(jax.random.key(seed), (batch, 8, 32, 32, 3))


def _small(config):
  config.model.update(width=16, depth=1, num_heads=2)
  return config


def test_motion_inputs_by_hand():
  video = _video()
  v = np.asarray(video)
  out = vit.motion_input(video, "residual", 10.0)
  np.testing.assert_allclose(out, 10.0 * (v - v.mean(axis=1, keepdims=True)),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
  diff = np.asarray(vit.motion_input(video, "difference", 3.0))
  np.testing.assert_array_equal(diff[:, 0], 0.0)
  np.testing.assert_allclose(diff[:, 5], 3.0 * (v[:, 5] - v[:, 4]), rtol=1e-5, atol=1e-6)
  assert vit.motion_input(video, "none", 10.0) is video
  # A static clip carries no motion: the input is exactly zero.
  static = jnp.broadcast_to(video[:, :1], video.shape)
  for kind in ("residual", "difference"):
    np.testing.assert_allclose(vit.motion_input(static, kind, 10.0), 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="config.model.motion_input='flow'"):
    vit.motion_input(video, "flow")
  config = mgtc_tiny.get_config()
  config.model.motion_input = "flow"
  with pytest.raises(ValueError, match="config.model.motion_input='flow' is not one of"):
    mgtc_task.make_task(config).validate_config(config)


def test_classifier_with_motion_input_equals_raw_classifier_on_the_transformed_clip():
  raw_config = _small(mgtc_tiny.get_config())
  raw_config.model.motion_input = "none"
  config = _small(mgtc_tiny.get_config())
  config.model.update(motion_input="difference", motion_input_scale=7.0)
  raw, task = mgtc_task.make_task(raw_config), mgtc_task.make_task(config)
  video = _video(1)
  params = task.init(jax.random.key(0), {"video": video})
  logits = task.logits(params, video, train=False)
  expected = raw.logits(params, vit.motion_input(video, "difference", 7.0), train=False)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(logits, raw.logits(params, video, train=False), atol=1e-6)
  # The pretrainer's encoder sees the same input (init_from copies it to the classifier).
  pre_config = _small(mgtc_tiny.get_config("stage=pretrain"))
  pre_config.model.update(motion_input="difference", motion_input_scale=7.0)
  pretrainer = mgtc_task.make_task(pre_config).model
  assert (pretrainer.motion_input, pretrainer.motion_input_scale) == ("difference", 7.0)


def test_token_rules_still_score_the_raw_clip():
  config = _small(mgtc_tiny.get_config("method=mgtc,ratio=0.5"))
  config.model.update(motion_input="residual", motion_input_scale=10.0)
  task = mgtc_task.make_task(config)
  video = _video(2)
  params = task.init(jax.random.key(0), {"video": video})
  kept = task._kept(params, video, train=False, rng=None)
  raw_config = _small(mgtc_tiny.get_config("method=mgtc,ratio=0.5"))
  raw_config.model.motion_input = "none"
  raw_kept = mgtc_task.make_task(raw_config)._kept(params, video, train=False, rng=None)
  np.testing.assert_array_equal(kept.indices, raw_kept.indices)


def test_runs_saved_before_the_fields_existed_still_resume():
  current = checkpoint.config_to_json(mgtc_tiny.get_config())
  current["model"].update(motion_input="none", motion_input_scale=1.0)
  old = checkpoint.config_to_json(mgtc_tiny.get_config())
  del old["model"]["motion_input"], old["model"]["motion_input_scale"]
  assert checkpoint.config_differences(old, current, "model") == []
  current["model"].update(motion_input="difference", motion_input_scale=10.0)
  assert checkpoint.config_differences(old, current, "model") == [
      "model.motion_input: 'none' -> 'difference'", "model.motion_input_scale: 1.0 -> 10.0"]


def test_imagenet_standardisation_comes_before_the_motion_transform():
  video = jax.random.uniform(jax.random.key(3), (1, 4, 8, 8, 3))
  mean = np.array([0.485, 0.456, 0.406])
  std = np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(vit.encoder_pixels(video, "imagenet", "none", 1.0),
                             (np.asarray(video) - mean) / std, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vit.encoder_pixels(video, "imagenet", "difference", 2.0)[:, 1],
                             2.0 * np.diff(np.asarray(video), axis=1)[:, 0] / std,
                             rtol=1e-4, atol=1e-5)
  assert vit.encoder_pixels(video, "none", "none", 1.0) is video
  with pytest.raises(ValueError, match="config.model.input_standardisation='kinetics'"):
    vit.encoder_pixels(video, "kinetics", "none", 1.0)
