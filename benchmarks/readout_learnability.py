r"""Can the recurrent point readout learn to track at all, given tokens that hold the answer?

Trains `configs/moog_readout_tiny.py`'s point head (same sizes, loss, anchoring and
optimizer recipe; any `--config.*` override applies) on hand-made per-frame tokens instead
of a backbone's states, so a failure can be pinned on the head or on the backbone:
  * `answer`: one token per track and frame, Fourier(query (x, y)) next to
    Fourier(true (x, y) at that frame). The head has only to find its own track's token by
    the query and copy the position out of it.
  * `own_answer`: the control for `answer` with nothing to select: each track is read
    out alone (tracks folded into the batch) from a one-token set holding its own
    `answer` token, so the head has only to regress the position out of it.
  * `patches`: the frame itself as 64 tokens, each a raw 4 x 4 RGB patch next to
    Fourier(patch centre). All the information is there, nothing is pre-digested: the
    head must match appearance across frames, as it must on a backbone's tokens.
It prints, every `--eval_every` steps, the position loss (Huber, 256-raster pixels, the
training loss's term) on the training stream and on the first validation batch, next to
the never-moving track's loss on that batch, and at the end that batch's TAP-Vid
`first`-mode < δ average for the head and for never-moving.

  python benchmarks/readout_learnability.py --tokens=answer --steps=4000

Results: docs/log/2026-11_readout_experiments_textured_scenes.md.
"""

import time

from absl import app
from absl import flags
import einops
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax

from moog import modules
from moog.readouts import heads
from moog.readouts import task as readout_task
from videolib import metrics as metrics_lib
from videolib import optim
from videolib.data import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/moog_readout_tiny.py", "Readout config file.", lock_config=True)
_TOKENS = flags.DEFINE_enum("tokens", "answer", ["answer", "own_answer", "patches"],
                            "What the head reads, see the module docstring.")
_STEPS = flags.DEFINE_integer("steps", 4000, "Training steps.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 500, "Steps between evaluations.")

PATCH_SIZE = 4


def answer_tokens(batch: dict, query_xy: jax.Array, num_bases: int) -> jax.Array:
  """[B, T, N, F]: per track, Fourier(query (x, y)) ++ Fourier(true (x, y) at frame t)."""
  height, width = batch["video"].shape[2:4]
  target_xy = batch["target_points"] / jnp.asarray([width, height], jnp.float32)
  target_xy = einops.rearrange(target_xy, "b n t c -> b t n c")
  query_xy = jnp.broadcast_to(query_xy[:, None], target_xy.shape)
  return jnp.concatenate([modules.fourier_features(query_xy, num_bases),
                          modules.fourier_features(target_xy, num_bases)], axis=-1)


def patch_tokens(batch: dict, num_bases: int) -> jax.Array:
  """[B, T, h*w, F]: raw PATCH_SIZE² RGB patches ++ Fourier(patch centre)."""
  video = batch["video"]
  height, width = video.shape[2:4]
  patches = einops.rearrange(video, "b t (h p) (w q) c -> b t (h w) (p q c)",
                             p=PATCH_SIZE, q=PATCH_SIZE)
  centres = modules.grid_coordinates(height // PATCH_SIZE, width // PATCH_SIZE)
  position = modules.fourier_features(centres.reshape(-1, 2), num_bases)
  return jnp.concatenate(
      [patches, jnp.broadcast_to(position, patches.shape[:2] + position.shape)], axis=-1)


def main(argv):
  del argv
  config = _CONFIG.value
  head_config = config.readout
  head = heads.PointReadout(
      width=head_config.width, num_layers=head_config.num_layers,
      num_heads=head_config.num_heads, qkv_size=head_config.qkv_size,
      mlp_dim=head_config.mlp_dim, num_fourier_bases=head_config.num_fourier_bases,
      features="predicted", anchor_to_query=head_config.anchor_to_query)
  train_batches = pipeline.make_train_iterator(
      config.data, global_batch_size=config.batch_size, seed=config.seed)
  eval_batch = next(iter(pipeline.make_eval_iterator(
      config.data, global_batch_size=config.eval_batch_size)))

  def queries(batch):
    return heads.normalise_query_points(batch["query_points"], batch["video"].shape[2:4])

  def tokens(batch, query_xy):
    if _TOKENS.value == "patches":
      return patch_tokens(batch, head_config.num_fourier_bases)
    return answer_tokens(batch, query_xy, head_config.num_fourier_bases)

  def head_inputs(batch):
    """(features, query_xy, query_frame) in the head's layout for `_TOKENS`."""
    query_xy, query_frame = queries(batch)
    features = tokens(batch, query_xy)
    if _TOKENS.value != "own_answer":
      return {"states_predicted": features}, query_xy, query_frame
    # One readout per track (a batch axis), over a one-token set: its own answer token.
    features = einops.rearrange(features, "b t n f -> b n t 1 f")
    return {"states_predicted": features}, query_xy[:, :, None], query_frame[:, :, None]

  def predict(params, batch):
    outputs = head.apply({"params": params}, *head_inputs(batch))
    if _TOKENS.value == "own_answer":  # [B, N, 1, ...] -> [B, N, ...]
      outputs = {name: outputs[name][:, :, 0]
                 for name in ("position", "visibility_logit", "certainty_logit")}
    return outputs

  def tracking_loss(outputs, batch):
    """(training loss, its position term)."""
    total, parts = heads.point_tracking_loss(
        outputs, batch["target_points"], batch["occluded"], queries(batch)[1],
        image_size=batch["video"].shape[2:4], tracks_valid=batch["tracks_valid"],
        mask=batch["_mask"])
    return total, parts["position"]

  def loss_fn(params, batch):
    return tracking_loss(predict(params, batch), batch)

  def never_moving(batch):
    height, width = batch["video"].shape[2:4]
    pixels, _ = readout_task.static_point_predictions(batch["query_points"],
                                                      batch["video"].shape[1])
    position = pixels / jnp.asarray([width, height], jnp.float32)
    logits = jnp.zeros(position.shape[:-1])
    return {"position": position, "visibility_logit": logits, "certainty_logit": logits}

  def within_delta(outputs, batch):
    height, width = batch["video"].shape[2:4]
    sums = metrics_lib.tapvid_metrics(
        batch["query_points"], batch["target_points"], batch["occluded"],
        outputs["position"] * jnp.asarray([width, height], jnp.float32),
        jnp.zeros(outputs["position"].shape[:-1], bool), image_size=(height, width),
        query_mode="first", tracks_valid=batch["tracks_valid"], mask=batch["_mask"])
    return metrics_lib.finalize(sums)["average_pts_within_thresh"]

  params = head.init(jax.random.PRNGKey(config.seed), *head_inputs(eval_batch))["params"]
  optimizer, _ = optim.make_optimizer(config.optimizer, _STEPS.value)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state, batch):
    (_, position), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, position

  eval_position = jax.jit(lambda params, batch: loss_fn(params, batch)[1])
  static_position = float(tracking_loss(never_moving(eval_batch), eval_batch)[1])
  print(f"tokens={_TOKENS.value}; never-moving position loss on the eval batch: "
        f"{static_position:.2f}")
  start, recent = time.time(), []
  for step in range(1, _STEPS.value + 1):
    params, opt_state, position = train_step(params, opt_state, next(train_batches))
    recent.append(float(position))
    if step % _EVAL_EVERY.value == 0 or step == _STEPS.value:
      print(f"step {step}: position loss train {np.mean(recent):.2f}, eval "
            f"{float(eval_position(params, eval_batch)):.2f} (never-moving "
            f"{static_position:.2f}); {time.time() - start:.0f} s", flush=True)
      recent = []
  print(f"eval batch < δ avg: head {within_delta(predict(params, eval_batch), eval_batch):.3f}, "
        f"never-moving {within_delta(never_moving(eval_batch), eval_batch):.3f}")


if __name__ == "__main__":
  app.run(main)
