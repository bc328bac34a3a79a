r"""How fast tiny MooG leaves the "mean colour" plateau, on data of graded difficulty.

Trains `configs/moog_tiny.py`'s model (any `--config.*` override applies) with its own
optimizer recipe on one of
  * `synthetic_batch`: one fixed batch of the built-in synthetic scenes (memorisation:
    can the model fit these 8 videos at all?);
  * `squares_batch`: one fixed batch of two flat squares moving on black;
  * `squares`: a fresh batch of moving squares every step (generalisation on easy data),
and prints, every `--eval_every` steps, next-frame PSNR (frames 1..T-1, eval lattice) on
the first batch next to the repeat-previous-frame and mean-colour-of-each-frame
predictors on the same pixels. No input pipeline or checkpoints: this isolates learning
speed from everything else.

  python benchmarks/moog_learnability.py --data=squares --steps=1500

Results: docs/results.md, "MooG model and training".
"""

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from moog import model as moog_model
from moog import task as moog_task
from videolib import optim
from videolib.data import scenes

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/moog_tiny.py", "MooG config file.", lock_config=True)
_DATA = flags.DEFINE_enum("data", "squares", ["synthetic_batch", "squares_batch", "squares"],
                          "Training data, see the module docstring.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Training steps.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 100, "Steps between evaluations.")


def moving_squares(batch_size: int, num_frames: int, size: int, seed: int) -> np.ndarray:
  """Two flat-coloured squares per video moving at constant speed on black, in [0, 1]."""
  rng = np.random.default_rng(seed)
  videos = np.zeros((batch_size, num_frames, size, size, 3), np.float32)
  for video in videos:
    for _ in range(2):
      colour = rng.uniform(0.2, 1.0, 3)
      side = rng.integers(size // 5, size // 3 + 1)
      start = rng.integers(0, size - side, 2)
      velocity = rng.integers(-2, 3, 2)
      for t in range(num_frames):
        y, x = np.clip(start + velocity * t, 0, size - side)
        video[t, y:y + side, x:x + side] = colour
  return videos


def synthetic_scenes(batch_size: int, num_frames: int, size: int) -> np.ndarray:
  config = scenes.SceneConfig(height=size, width=size, num_frames=num_frames)
  return np.stack([scenes.generate(config, seed=[index, 0])["video"]
                   for index in range(batch_size)]).astype(np.float32) / 255.0


def main(argv):
  del argv
  config = _CONFIG.value
  shape = (config.batch_size, config.data.num_frames, config.data.resolution)
  if _DATA.value == "synthetic_batch":
    first_batch = synthetic_scenes(*shape)
  else:
    first_batch = moving_squares(*shape, seed=0)
  first_batch = jnp.asarray(first_batch)

  task = moog_task.MooGTask(config)
  model = task.model
  params = task.init(jax.random.key(config.seed), {"video": first_batch})
  tx, _ = optim.make_optimizer(config.optimizer, _STEPS.value)
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, video, rng):
    (loss, _), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(
        params, {"video": video}, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return jax.tree.map(jnp.add, params, updates), opt_state, loss

  @jax.jit
  def evaluate(params):
    outputs = model.apply({"params": params}, first_batch, train=False,
                          rngs={"default": jax.random.key(1)})
    predicted, targets = outputs["video_predicted"], outputs["subsampled_targets"]
    mean_colour = jnp.broadcast_to(jnp.mean(targets, axis=(-3, -2), keepdims=True),
                                   targets.shape)
    later = lambda x: jnp.mean(x[:, 1:])
    return dict(
        next_frame=later(moog_model.psnr_per_image(predicted, targets)),
        repeat_previous_frame=jnp.mean(
            moog_model.psnr_per_image(targets[:, :-1], targets[:, 1:])),
        mean_colour=later(moog_model.psnr_per_image(mean_colour, targets)))

  start = time.perf_counter()
  for step in range(_STEPS.value + 1):
    if step % _EVAL_EVERY.value == 0:
      psnr = {name: round(float(value), 2) for name, value in evaluate(params).items()}
      print(json.dumps(dict(step=step, seconds=round(time.perf_counter() - start), **psnr)),
            flush=True)
    if step == _STEPS.value:
      break
    video = first_batch
    if _DATA.value == "squares":
      video = jnp.asarray(moving_squares(*shape, seed=1000 + step))
    params, opt_state, _ = train_step(params, opt_state, video,
                                      jax.random.fold_in(jax.random.key(2), step))


if __name__ == "__main__":
  app.run(main)
