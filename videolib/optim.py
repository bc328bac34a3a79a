"""Optimizer and learning-rate schedule built from `config.optimizer`.

The default is the official MooG recipe (docs/moog_reference.md §8): global-norm clipping, then
AdamW with weight decay on every parameter (no mask), lr warmed up linearly from 0 and decayed with a
cosine to `end_lr` at the last step. `decay_steps` counts the warmup, as in
`optax.warmup_cosine_decay_schedule`.

Which parameters AdamW decays (`weight_decay_mask`):
  * 'all' (default): every parameter, biases and norm parameters included. The official
    MooG optimizer (docs/moog_reference.md §8); also what every run written before this field
    existed did (registered with `checkpoint.register_added_config_fields`).
  * 'matrices': VideoMAE / BEiT / timm's rule (`optim_factory.get_parameter_groups`): no
    decay for parameters with fewer than 2 dimensions (biases, LayerNorm scales and
    biases, q / v biases), for leaves named 'bias', and for the learned position
    embeddings and special tokens named in `NO_DECAY_NAMES` (VideoMAE's
    `no_weight_decay()`: pos_embed, cls_token; the pretrainer's mask_token). Everything
    else (Dense and embedding kernels) is decayed.

Optional layer-wise lr decay (`layer_decay`, off by default; BEiT / VideoMAE fine-tuning):
the task maps each parameter to a layer id in [0, num_layers + 1] (`LayerIds`; for a ViT
the patch embedding is 0, block i is i + 1, the final norm and head num_layers + 1) and
that parameter's update is multiplied by `layer_decay ** (num_layers + 1 - id)`. The scale
is applied after AdamW (`scale_by_layer_decay`), so it multiplies the whole AdamW step,
weight decay included: the same as VideoMAE's per-group `lr_scale` on PyTorch AdamW, with
the moments untouched. With `layer_decay=None` the optimizer is exactly the default chain.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import ml_collections
import optax

from videolib import checkpoint

PyTree = Any

WEIGHT_DECAY_MASKS = ("all", "matrices")
# Leaf names never decayed under 'matrices' (VideoMAE's `no_weight_decay()` skip list).
NO_DECAY_NAMES = ("pos_embed", "position_embedding", "position_embeddings", "cls_token",
                  "mask_token")
# Runs written before `weight_decay_mask` existed decayed every parameter.
checkpoint.register_added_config_fields({"optimizer.weight_decay_mask": "all"})


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
          # Parameters AdamW decays: 'all' (MooG) | 'matrices' (VideoMAE: not biases,
          # norm parameters, position embeddings or special tokens). See module doc.
          weight_decay_mask="all",
          clip_norm=1.0,
          grad_accumulation_steps=1,
          # Layer-wise lr decay factor in (0, 1]; None = off. Needs a task with `layer_ids`.
          layer_decay=ml_collections.config_dict.placeholder(float),
      )
  )


@dataclasses.dataclass(frozen=True)
class LayerIds:
  """How a task's parameters map to layers, for layer-wise lr decay.

  Attributes:
    num_layers: L, the number of transformer blocks; ids run from 0 (input embedding)
      to L + 1 (the top: final norm and head).
    layer_id: parameter path (the tree keys, e.g. ('encoder', 'block_3', 'mlp', 'fc1',
      'kernel')) -> its layer id; raises ValueError for a path it does not know.
  """

  num_layers: int
  layer_id: Callable[[tuple[str, ...]], int]


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_weight_decay_mask(mask: str) -> None:
  """Raises ValueError, naming the field, if `mask` is not one of `WEIGHT_DECAY_MASKS`."""
  if mask not in WEIGHT_DECAY_MASKS:
    raise ValueError(f"config.optimizer.weight_decay_mask={mask!r} is not one of "
                     f"{WEIGHT_DECAY_MASKS}.")


def weight_decay_mask(params: PyTree, mask: str) -> PyTree | None:
  """Bool tree, True where AdamW applies weight decay; None (= all) for mask 'all'.

  Raises:
    ValueError: `mask` is not one of `WEIGHT_DECAY_MASKS`.
  """
  check_weight_decay_mask(mask)
  if mask == "all":
    return None

  def decayed(path, leaf):
    names = _path_names(path)
    leaf_name = names[-1] if names else ""
    return bool(len(leaf.shape) >= 2 and leaf_name != "bias"
                and not set(names) & set(NO_DECAY_NAMES))

  return jax.tree_util.tree_map_with_path(decayed, params)


def layer_decay_scales(params: PyTree, layer_ids: LayerIds, decay: float) -> PyTree:
  """Per-parameter lr multiplier `decay ** (num_layers + 1 - layer_id)` (python floats)."""

  def scale(path, _):
    layer = layer_ids.layer_id(_path_names(path))
    if not 0 <= layer <= layer_ids.num_layers + 1:
      raise ValueError(f"Layer id {layer} of parameter {'/'.join(_path_names(path))} is "
                       f"outside [0, {layer_ids.num_layers + 1}].")
    return float(decay) ** (layer_ids.num_layers + 1 - layer)

  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_layer_decay(layer_ids: LayerIds, decay: float) -> optax.GradientTransformation:
  """Stateless transform multiplying each update by its `layer_decay_scales` entry."""

  def update_fn(updates, params=None):
    del params
    scales = layer_decay_scales(updates, layer_ids, decay)
    return jax.tree.map(lambda u, s: u * s, updates, scales)

  return optax.stateless(update_fn)


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
    opt_config: ml_collections.ConfigDict, num_train_steps: int,
    layer_ids: LayerIds | None = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule).

  With `grad_accumulation_steps > 1` the optimizer is wrapped in `optax.MultiSteps`: the
  schedule then advances once per accumulated update, so `num_train_steps` counts updates.

  Args:
    opt_config: see `default_optimizer_config`.
    num_train_steps: optimizer updates of the run (the schedule's length).
    layer_ids: the task's parameter -> layer map; required when `opt_config.layer_decay`
      is set, ignored otherwise.

  Raises:
    ValueError: `layer_decay` outside (0, 1], or set without `layer_ids`; an unknown
      `weight_decay_mask`.
  """
  schedule = make_schedule(opt_config, num_train_steps)
  mask_name = opt_config.get("weight_decay_mask", "all")
  check_weight_decay_mask(mask_name)
  mask = None if mask_name == "all" else functools.partial(weight_decay_mask, mask=mask_name)
  transforms = [
      optax.clip_by_global_norm(opt_config.clip_norm),
      optax.adamw(
          learning_rate=schedule,
          b1=opt_config.b1,
          b2=opt_config.b2,
          eps=opt_config.eps,
          weight_decay=opt_config.weight_decay,
          mask=mask,
      ),
  ]
  layer_decay = opt_config.get("layer_decay")
  if layer_decay is not None:
    if not 0.0 < layer_decay <= 1.0:
      raise ValueError(f"config.optimizer.layer_decay={layer_decay} is outside (0, 1].")
    if layer_ids is None:
      raise ValueError(
          f"config.optimizer.layer_decay={layer_decay} needs a task that maps parameters "
          "to layers (a `layer_ids()` method, e.g. mgtc's ClassificationTask); this one "
          "does not. Set it to None.")
    transforms.append(scale_by_layer_decay(layer_ids, layer_decay))
  tx = optax.chain(*transforms)
  if opt_config.grad_accumulation_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=opt_config.grad_accumulation_steps)
  return tx, schedule
