"""Memory controls: gradient accumulation and bfloat16 compute with float32 parameters."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from moog import model as moog_model
from videolib import optim
from videolib import train

BATCH_SIZE = 8


class LinearRegressionTask(train.Task):
  """A deterministic task whose loss is a batch mean, as the trainer's tasks' losses are."""

  def init(self, rng, batch):
    return {"w": jax.random.normal(rng, (batch["x"].shape[-1], 2)), "b": jnp.zeros((2,))}

  def loss_fn(self, params, batch, rng):
    del rng
    residual = batch["x"] @ params["w"] + params["b"] - batch["y"]
    return jnp.mean(jnp.square(residual)), {}


def trainer_config(grad_accumulation_steps: int) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(dict(seed=0, num_train_steps=8))
  config.optimizer = optim.default_optimizer_config()
  config.optimizer.update(peak_lr=0.1, warmup_steps=0,
                          grad_accumulation_steps=grad_accumulation_steps)
  return config


def train_steps(config, batches):
  """Runs the trainer's own train step (clip, AdamW, MultiSteps, NaN guard) on `batches`."""
  task = LinearRegressionTask()
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  init_state, _ = train.abstract_train_state(task, tx, batches[0], jax.random.key(0))
  state = jax.jit(init_state)(jax.random.key(0))
  step = jax.jit(train.make_train_step(task, tx, schedule, config))
  params_seen = []
  for batch in batches:
    state, _ = step(state, batch)
    params_seen.append(jax.tree.map(np.asarray, state["params"]))
  return params_seen


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_batches_give_the_update_of_one_full_batch(k):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(BATCH_SIZE, 3)).astype(np.float32)
  batch = {"x": x, "y": (x @ rng.normal(size=(3, 2)) + 0.1).astype(np.float32)}
  micro = BATCH_SIZE // k
  micro_batches = [{name: value[i * micro:(i + 1) * micro] for name, value in batch.items()}
                   for i in range(k)]

  (full_batch_params,) = train_steps(trainer_config(1), [batch])
  accumulated = train_steps(trainer_config(k), micro_batches)

  for name in ("w", "b"):
    # Nothing lands before the k-th micro-batch; then exactly the full-batch update.
    for params in accumulated[:-1]:
      np.testing.assert_array_equal(params[name], accumulated[0][name])
    np.testing.assert_allclose(accumulated[-1][name], full_batch_params[name], atol=1e-6)
    assert np.max(np.abs(accumulated[-1][name] - accumulated[0][name])) > 1e-2


def tiny_moog(compute_dtype: str):
  config = moog_model.tiny_model_config()
  config.compute_dtype = compute_dtype
  return moog_model.build_moog(config)


def test_bfloat16_compute_keeps_float32_parameters_loss_and_gradients():
  video = jax.random.uniform(jax.random.key(1), (2, 3, 16, 16, 3))
  float32_model, bfloat16_model = tiny_moog("float32"), tiny_moog("bfloat16")
  params = float32_model.init({"params": jax.random.key(0), "default": jax.random.key(2)},
                              video, train=True)["params"]
  bfloat16_params = bfloat16_model.init(
      {"params": jax.random.key(0), "default": jax.random.key(2)}, video, train=True)["params"]

  def loss(model, params):
    outputs = model.apply({"params": params}, video, train=True,
                          rngs={"default": jax.random.key(3)})
    return moog_model.l2_loss(outputs)

  # Same float32 parameters whatever the compute dtype.
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(bfloat16_params)):
    assert b.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
  float32_loss, float32_grads = jax.value_and_grad(lambda p: loss(float32_model, p))(params)
  bfloat16_loss, bfloat16_grads = jax.value_and_grad(lambda p: loss(bfloat16_model, p))(params)
  assert bfloat16_loss.dtype == jnp.float32
  assert {g.dtype for g in jax.tree.leaves(bfloat16_grads)} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(bfloat16_loss, float32_loss, rtol=2e-2)
  cosine = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(float32_grads),
                                                 jax.tree.leaves(bfloat16_grads)))
  cosine /= (optax.global_norm(float32_grads) * optax.global_norm(bfloat16_grads))
  assert cosine > 0.99
  # The matmuls really run in bfloat16.
  hlo = jax.jit(lambda p: loss(bfloat16_model, p)).lower(params).as_text()
  assert "bf16" in hlo
  assert "bf16" not in jax.jit(lambda p: loss(float32_model, p)).lower(params).as_text()


def test_unknown_compute_dtype_names_the_field():
  with pytest.raises(ValueError, match="model.compute_dtype must be one of"):
    tiny_moog("float16")
