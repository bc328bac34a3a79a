"""AdamW weight-decay mask (`config.optimizer.weight_decay_mask`) in videolib/optim.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mgtc_tiny
from configs import mgtc_ucf101
from configs import moog_movi
from configs import moog_tiny
from mgtc import task as mgtc_task
from videolib import checkpoint
from videolib import optim
from videolib import train

_LR, _WD = 0.1, 0.5


def _opt_config(mask):
  config = optim.default_optimizer_config()
  config.update(peak_lr=_LR, end_lr=_LR, warmup_steps=0, weight_decay=_WD, clip_norm=1e9,
                weight_decay_mask=mask)
  return config


def _params():
  return {
      "dense": {"kernel": jnp.array([[1.0, -2.0], [3.0, 4.0]]),
                "bias": jnp.array([5.0, -6.0])},
      "norm": {"scale": jnp.array([7.0, 8.0])},
      "pos_embed": jnp.array([[0.5, -0.5], [1.5, 2.5]]),
      "patch_embed": {"proj": {"kernel": jnp.array([[2.0], [-1.0]])}},
  }


@pytest.mark.parametrize("mask", ["all", "matrices"])
def test_first_update_matches_the_hand_computed_adamw_step(mask):
  params = _params()
  tx, _ = optim.make_optimizer(_opt_config(mask), num_train_steps=10)
  state = tx.init(params)
  # Zero gradients: the Adam part is 0 / (0 + eps) = 0, so the update is -lr * wd * p on
  # decayed parameters and exactly 0 on excluded ones.
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, state, params)
  decayed_under_matrices = {"dense/kernel": True, "dense/bias": False, "norm/scale": False,
                            "pos_embed": False, "patch_embed/proj/kernel": True}
  flat = {"/".join(optim._path_names(path)): np.asarray(u)
          for path, u in jax.tree_util.tree_leaves_with_path(updates)}
  flat_params = {"/".join(optim._path_names(path)): np.asarray(p)
                 for path, p in jax.tree_util.tree_leaves_with_path(params)}
  assert set(flat) == set(decayed_under_matrices)
  for name, update in flat.items():
    decayed = mask == "all" or decayed_under_matrices[name]
    expected = -_LR * _WD * flat_params[name] if decayed else np.zeros_like(update)
    np.testing.assert_allclose(update, expected, rtol=1e-6, atol=0, err_msg=name)
  # kernel [[1, -2], [3, 4]]: -0.1 * 0.5 * p.
  np.testing.assert_allclose(flat["dense/kernel"], [[-0.05, 0.1], [-0.15, -0.2]], rtol=1e-6)

  # Non-zero gradients: first step is -lr * (g / (|g| + eps) + wd * mask * p).
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.25), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  bias = np.asarray(updates["dense"]["bias"])
  kernel = np.asarray(updates["dense"]["kernel"])
  bias_decay = _WD * np.array([5.0, -6.0]) if mask == "all" else 0.0
  np.testing.assert_allclose(bias, -_LR * (1.0 + bias_decay), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(kernel, -_LR * (1.0 + _WD * np.array([[1.0, -2.0], [3.0, 4.0]])),
                             rtol=1e-6, atol=1e-7)


def test_matrices_mask_on_the_mgtc_models():
  # Classifier: only Dense / embedding kernels are decayed.
  config = mgtc_tiny.get_config()
  classifier = mgtc_task.make_task(config)
  shapes = jax.eval_shape(classifier.init, jax.random.key(0),
                          {"video": jnp.zeros((1, 8, 32, 32, 3))})
  mask = optim.weight_decay_mask(shapes, "matrices")
  for path, decayed in jax.tree_util.tree_leaves_with_path(mask):
    names = optim._path_names(path)
    assert decayed == (names[-1] == "kernel"), names
  # Pretrainer: its learned mask token is excluded, like VideoMAE's `no_weight_decay`.
  pretrain = mgtc_task.make_task(mgtc_tiny.get_config("stage=pretrain"))
  shapes = jax.eval_shape(pretrain.init, jax.random.key(0),
                          {"video": jnp.zeros((1, 8, 32, 32, 3))})
  mask = optim.weight_decay_mask(shapes, "matrices")
  assert shapes["mask_token"].ndim == 3 and not mask["mask_token"]
  assert mask["decoder_head"]["kernel"] and not mask["decoder_head"]["bias"]


def test_trainer_optimizer_leaves_excluded_parameters_undecayed():
  config = mgtc_tiny.get_config()
  config.model.update(width=16, depth=1, num_heads=2)
  config.optimizer.update(warmup_steps=0, peak_lr=_LR, end_lr=_LR, weight_decay=_WD,
                          clip_norm=1e9, layer_decay=0.5)
  task = mgtc_task.make_task(config)
  params = task.init(jax.random.key(0), {"video": jnp.zeros((1, 8, 32, 32, 3))})
  params = jax.tree.map(lambda p: p + 1.0, params)  # Non-zero everywhere.
  tx, _ = train.make_optimizer(config, task)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  scales = optim.layer_decay_scales(params, task.layer_ids(), 0.5)
  q_bias = updates["encoder"]["block_0"]["attn"]["q_bias"]
  np.testing.assert_array_equal(q_bias, 0.0)
  np.testing.assert_array_equal(updates["fc_norm"]["scale"], 0.0)
  kernel = params["encoder"]["block_0"]["mlp"]["fc1"]["kernel"]
  scale = scales["encoder"]["block_0"]["mlp"]["fc1"]["kernel"]
  assert scale == pytest.approx(0.5)  # Block 0 of 1: 0.5 ** (1 + 1 - 1).
  np.testing.assert_allclose(updates["encoder"]["block_0"]["mlp"]["fc1"]["kernel"],
                             -scale * _LR * _WD * np.asarray(kernel), rtol=1e-6)


def test_config_defaults():
  assert optim.default_optimizer_config().weight_decay_mask == "all"
  for config in (moog_tiny.get_config(), moog_movi.get_config()):
    assert config.optimizer.weight_decay_mask == "all"  # The official MooG recipe.
  for config in (mgtc_tiny.get_config(), mgtc_tiny.get_config("stage=pretrain"),
                 mgtc_ucf101.get_config(), mgtc_ucf101.get_config("stage=pretrain")):
    assert config.optimizer.weight_decay_mask == "matrices"  # VideoMAE.


def test_unknown_mask_is_refused_naming_the_field():
  with pytest.raises(ValueError, match=r"config.optimizer.weight_decay_mask='biases'"):
    optim.make_optimizer(_opt_config("biases"), 10)


def test_configs_saved_before_the_field_existed_still_match():
  current = checkpoint.config_to_json(mgtc_tiny.get_config())
  old = checkpoint.config_to_json(mgtc_tiny.get_config())
  del old["optimizer"]["weight_decay_mask"]
  # Old runs decayed everything: the same as 'all', a difference from 'matrices'.
  assert checkpoint.config_differences(old, current, "optimizer") == [
      "optimizer.weight_decay_mask: 'all' -> 'matrices'"]
  current["optimizer"]["weight_decay_mask"] = "all"
  assert checkpoint.config_differences(old, current, "optimizer") == []
