"""Optimizer and learning-rate schedule built from `config.optimizer`.

The default is the official MooG recipe (moog.md §8): global-norm clipping, then AdamW with
weight decay on every parameter (no mask), lr warmed up linearly from 0 and decayed with a
cosine to `end_lr` at the last step. `decay_steps` counts the warmup, as in
`optax.warmup_cosine_decay_schedule`.
"""

import ml_collections
import optax


def default_optimizer_config() -> ml_collections.ConfigDict:
  """The official MooG MOVi optimizer settings."""
  return ml_collections.ConfigDict(
      dict(
          peak_lr=1e-4,
          end_lr=1e-7,
          warmup_steps=1000,
          b1=0.9,
          b2=0.95,
          eps=1e-8,
          weight_decay=1e-4,
          clip_norm=1.0,
          grad_accumulation_steps=1,
      )
  )


def make_schedule(
    opt_config: ml_collections.ConfigDict, num_train_steps: int
) -> optax.Schedule:
  """Linear warmup from 0 to `peak_lr`, then cosine decay to `end_lr` at the last step."""
  warmup_steps = min(opt_config.warmup_steps, max(num_train_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=opt_config.peak_lr,
      warmup_steps=warmup_steps,
      decay_steps=max(num_train_steps, warmup_steps + 1),
      end_value=opt_config.end_lr,
  )


def make_optimizer(
    opt_config: ml_collections.ConfigDict, num_train_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule).

  With `grad_accumulation_steps > 1` the optimizer is wrapped in `optax.MultiSteps`: the
  schedule then advances once per accumulated update, so `num_train_steps` counts updates.
  """
  schedule = make_schedule(opt_config, num_train_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(opt_config.clip_norm),
      optax.adamw(
          learning_rate=schedule,
          b1=opt_config.b1,
          b2=opt_config.b2,
          eps=opt_config.eps,
          weight_decay=opt_config.weight_decay,
      ),
  )
  if opt_config.grad_accumulation_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=opt_config.grad_accumulation_steps)
  return tx, schedule
