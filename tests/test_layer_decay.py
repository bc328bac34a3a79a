"""Layer-wise learning-rate decay (`config.optimizer.layer_decay`) in videolib/optim.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import mgtc_tiny
from mgtc import task as mgtc_task
from mgtc import vit
from videolib import optim
from videolib import train


def _config(layer_decay=None):
  """The tiny MGTC fine-tuning config with a 2-block, 16-wide ViT."""
  config = mgtc_tiny.get_config()
  config.model.update(width=16, depth=2, num_heads=2)
  config.optimizer.update(warmup_steps=0, clip_norm=1e9, peak_lr=1e-3, weight_decay=0.05)
  config.optimizer.layer_decay = layer_decay
  # The hand computations below decay every parameter (MGTC configs default to 'matrices').
  config.optimizer.weight_decay_mask = "all"
  return config


def _params_and_grads(task, seed=0):
  """Random parameters and gradients with the tiny classifier's tree."""
  shapes = jax.eval_shape(task.init, jax.random.key(0),
                          {"video": jnp.zeros((1, 8, 32, 32, 3))})
  leaves, treedef = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.key(seed), 2 * len(leaves))
  params = [jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys[::2], leaves)]
  grads = [jax.random.normal(k, s.shape, s.dtype) for k, s in zip(keys[1::2], leaves)]
  return jax.tree.unflatten(treedef, params), jax.tree.unflatten(treedef, grads)


def _names(path):
  return tuple(k.key for k in path)


# decay 0.7, 2 blocks: scale = 0.7 ** (2 + 1 - layer_id).
_GOLDEN_SCALES = {"patch_embed": 0.343, "block_0": 0.49, "block_1": 0.7, "fc_norm": 1.0,
                  "head": 1.0}


def test_per_layer_scales_of_a_tiny_vit_follow_the_formula():
  task = mgtc_task.make_task(_config())
  params, _ = _params_and_grads(task)
  scales = optim.layer_decay_scales(params, task.layer_ids(), 0.7)
  seen = set()
  for path, scale in jax.tree_util.tree_leaves_with_path(scales):
    names = _names(path)
    group = names[1] if names[0] == "encoder" else names[0]
    seen.add(group)
    assert scale == pytest.approx(_GOLDEN_SCALES[group], rel=1e-12), names
  assert seen == set(_GOLDEN_SCALES)
  assert vit.classifier_layer_id(("encoder", "block_11", "attn", "q_bias"), 12) == 12
  assert vit.classifier_layer_id(("head", "kernel"), 12) == 13
  with pytest.raises(ValueError, match="decoder_head"):
    vit.classifier_layer_id(("decoder_head", "kernel"), 12)


def test_layer_decay_update_is_the_adamw_update_scaled_per_layer():
  config = _config(layer_decay=0.7)
  task = mgtc_task.make_task(config)
  params, grads = _params_and_grads(task)
  tx, schedule = train.make_optimizer(config, task)
  plain, _ = optim.make_optimizer(_config().optimizer, config.num_train_steps)
  state, plain_state = tx.init(params), plain.init(params)
  opt = config.optimizer
  lr = float(schedule(0))
  assert lr == pytest.approx(opt.peak_lr)
  scales = optim.layer_decay_scales(params, task.layer_ids(), 0.7)
  for step in range(3):
    step_grads = jax.tree.map(lambda g, s=step: g * (1.0 + s), grads)
    updates, state = tx.update(step_grads, state, params)
    plain_updates, plain_state = plain.update(step_grads, plain_state, params)
    if step == 0:
      # First AdamW step by hand: bias-corrected moments are g and g^2.
      hand = jax.tree.map(
          lambda g, p, s: -s * lr * (np.asarray(g) / (np.abs(np.asarray(g)) + opt.eps)
                                     + opt.weight_decay * np.asarray(p)),
          step_grads, params, scales)
      jax.tree.map(lambda u, h: np.testing.assert_allclose(u, h, rtol=2e-5, atol=1e-9),
                   updates, hand)
    # Later steps: the moments are untouched by the scaling.
    jax.tree.map(lambda u, p, s: np.testing.assert_allclose(u, s * np.asarray(p), rtol=1e-6),
                 updates, plain_updates, scales)


def test_default_optimizer_is_unchanged_bit_for_bit():
  config = _config()
  assert config.optimizer.layer_decay is None
  task = mgtc_task.make_task(config)  # Has layer_ids(): ignored while layer_decay is None.
  params, grads = _params_and_grads(task)
  tx, _ = train.make_optimizer(config, task)
  opt = config.optimizer
  reference = optax.chain(
      optax.clip_by_global_norm(opt.clip_norm),
      optax.adamw(optim.make_schedule(opt, config.num_train_steps), b1=opt.b1, b2=opt.b2,
                  eps=opt.eps, weight_decay=opt.weight_decay))
  state, ref_state = tx.init(params), reference.init(params)
  assert jax.tree.structure(state) == jax.tree.structure(ref_state)
  for _ in range(3):
    updates, state = jax.jit(tx.update)(grads, state, params)
    ref_updates, ref_state = jax.jit(reference.update)(grads, ref_state, params)
    jax.tree.map(np.testing.assert_array_equal, updates, ref_updates)
    params = optax.apply_updates(params, updates)


def test_layer_decay_errors_name_the_field():
  config = _config(layer_decay=0.75)
  no_layers = train.Task()  # A task without layer_ids (e.g. MooG's).
  with pytest.raises(ValueError, match=r"config.optimizer.layer_decay=0.75 needs a task"):
    train.make_optimizer(config, no_layers)
  config.optimizer.layer_decay = 1.5
  with pytest.raises(ValueError, match=r"config.optimizer.layer_decay=1.5 is outside"):
    train.make_optimizer(config, mgtc_task.make_task(config))


def test_layer_decay_composes_with_gradient_accumulation():
  config = _config(layer_decay=0.5)
  config.optimizer.grad_accumulation_steps = 2
  task = mgtc_task.make_task(config)
  params, grads = _params_and_grads(task)
  tx, _ = train.make_optimizer(config, task)
  plain_config = _config(layer_decay=None)
  plain_config.optimizer.grad_accumulation_steps = 2
  plain, _ = train.make_optimizer(plain_config, task)
  state, plain_state = tx.init(params), plain.init(params)
  scales = optim.layer_decay_scales(params, task.layer_ids(), 0.5)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
    plain_updates, plain_state = plain.update(grads, plain_state, params)
  jax.tree.map(lambda u, p, s: np.testing.assert_allclose(u, s * np.asarray(p), rtol=1e-6),
               updates, plain_updates, scales)
  assert float(jnp.abs(updates["head"]["kernel"]).sum()) > 0
