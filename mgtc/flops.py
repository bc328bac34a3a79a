"""Compute accounting: GFLOPs per view in the papers' multiply-add convention.

fvcore (VideoMAE, MAR, MGTC tables) counts one multiply-add as one FLOP, i.e. GMACs.
XLA's `cost_analysis()['flops']` counts 2 per multiply-add, so it is halved here.
Totals over a test protocol are GFLOPs per view x (#clips x #crops).

Two counts:
  * `analytic_gmacs`: per layer 12 * N * d^2 (qkv 3, proj 1, MLP 8 with ratio 4) plus
    2 * N^2 * d (q k^T and attention x v), over `depth` layers, plus the tubelet
    embedding N * (s * P * P * C) * d and the head d * classes. This reproduces the
    180.3 GFLOPs of VideoMAE ViT-B at 16 x 224^2 and the docs/mgtc_reference.md §6 table.
  * `xla_gmacs`: XLA's count of the lowered program (shapes only, no data; the same on
    every backend, see `videolib.cost.xla_flops`). It also
    counts softmax, LayerNorm, GELU, biases and residual adds, which fvcore ignores,
    so it is a little above the analytic count (see the tests for the measured gap).

The motion score (one subtraction and one pooling add per pixel, `scoring_gmacs`) is
included in `gflops_per_view`; at 16 x 224^2 it is about 0.005 GFLOPs.
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from mgtc import masking
from mgtc import selection
from mgtc import vit
from videolib import cost


def analytic_gmacs(
    num_tokens: int,
    *,
    width: int,
    depth: int,
    patch_size: int = 16,
    tubelet_size: int = 2,
    channels: int = 3,
    mlp_ratio: float = 4.0,
    num_classes: int = 0,
) -> float:
  """Backbone multiply-adds in G for `num_tokens` kept tokens (one view)."""
  n, d = num_tokens, width
  per_layer = (4 + 2 * mlp_ratio) * n * d**2 + 2 * n**2 * d
  embedding = n * tubelet_size * patch_size**2 * channels * d
  head = d * num_classes
  return (depth * per_layer + embedding + head) / 1e9


def scoring_gmacs(
    num_frames: int,
    image_size: int,
    channels: int = 3,
    tubelet_size: int = 2,
    rule: str = "consecutive",
) -> float:
  """Motion-score cost in G ops: one subtraction per differenced pixel + one add per
  pooled value (abs and the final scaling are not counted, as in fvcore)."""
  pixels_per_frame = image_size**2 * channels
  if rule == "consecutive":
    differenced = num_frames - 1
  elif rule == "rlt":
    differenced = num_frames // tubelet_size - 1
  else:
    raise ValueError(f"rule={rule!r} is not one of {selection.SCORE_RULES}.")
  return 2 * differenced * pixels_per_frame / 1e9


def kept_token_count(
    config: ml_collections.ConfigDict, drop_ratio: float
) -> int:
  """Tokens the encoder sees per view for MGTC at `drop_ratio` (0 = all)."""
  video_shape = (config.num_frames, config.image_size, config.image_size,
                 config.channels)
  grid = selection.token_grid(video_shape, config.patch_size, config.tubelet_size)
  num_drop = selection.num_tokens_to_drop(
      grid.num_tokens, drop_ratio, grid.tokens_per_slice)
  return grid.num_tokens - num_drop


def gflops_per_view(
    config: ml_collections.ConfigDict,
    drop_ratio: float = 0.0,
    *,
    include_scoring: bool = True,
    include_head: bool = False,
) -> float:
  """Analytic GFLOPs (GMACs) per view of a `vit_*_config()` at its frames and size.

  Args:
    config: model config; num_frames and image_size set the view.
    drop_ratio: MGTC ratio; 0 runs all tokens (and nothing is scored).
    include_scoring: add the pixel motion-score cost when drop_ratio > 0.
    include_head: add the classifier (0.3 MMACs; the table of docs/mgtc_reference.md §6
      leaves it out).
  """
  gmacs = analytic_gmacs(
      kept_token_count(config, drop_ratio),
      width=config.width, depth=config.depth, patch_size=config.patch_size,
      tubelet_size=config.tubelet_size, channels=config.channels,
      mlp_ratio=config.mlp_ratio,
      num_classes=config.num_classes if include_head else 0,
  )
  if include_scoring and drop_ratio > 0:
    gmacs += scoring_gmacs(config.num_frames, config.image_size, config.channels,
                           config.tubelet_size)
  return gmacs


def xla_gmacs(fn: Callable[..., Any], *args: Any) -> float:
  """XLA's multiply-add count in G of `fn(*args)`; args may be ShapeDtypeStructs."""
  return cost.xla_flops(fn, *args) / 2 / 1e9


def xla_gflops_per_view(
    config: ml_collections.ConfigDict, drop_ratio: float = 0.0
) -> float:
  """XLA count of one MGTC view: scoring + selection + classifier forward.

  Nothing is executed: parameters and the clip are shape structs.
  """
  model = vit.build_classifier(config)
  video = jax.ShapeDtypeStruct(
      (1, config.num_frames, config.image_size, config.image_size,
       config.channels), jnp.float32)
  params = jax.eval_shape(
      lambda v: model.init(jax.random.key(0), v, train=False), video)
  drop_config = masking.token_drop_config()
  drop_config.method = "mgtc" if drop_ratio > 0 else "none"
  drop_config.drop_ratio = drop_ratio

  def forward(params, video):
    kept = masking.kept_token_indices(
        drop_config, video, patch_size=config.patch_size,
        tubelet_size=config.tubelet_size, train=False)
    return model.apply(params, video, kept, train=False)

  return xla_gmacs(forward, params, video)
