"""On-the-grid baselines for MooG: *Grid* and *Grid Rec.*, and the backbone factory.

The MooG paper compares its off-the-grid tokens with two on-the-grid models that share
MooG's encoder, decoder and next-frame objective. No public source fixes their exact
form, so this file defines them as the smallest changes to MooG that put every state
token on one encoder grid cell, keeping everything else identical:

* **Grid** (no recurrence): the state of frame t is the corrector applied to the current
  frame's encoder tokens alone, `c_t = LN_1e-4(e_t + Corrector(e_t, kv=e_t))`; the
  next frame is still predicted by `p_{t+1} = c_t + Predictor(c_t)` and decoded from
  `p_{t+1}`. Nothing is carried over time: `c_t` depends on frame t only, `p_{t+1}` on
  frame t only (frame 0 is predicted from MooG's random initial state, as in MooG).
* **Grid Rec.** (recurrent, tied to cells): as MooG, but the corrector's queries are the
  predicted state plus the encoder token of the state token's own cell,
  `q_t = p_t + e_t`, `c_t = LN_1e-4(q_t + Corrector(q_t, kv=e_t))`. Token i receives
  cell i's features (which carry cell i's Fourier position) at every step, so it stays
  the representation of cell i; every block is permutation-equivariant over tokens, so
  permuting the grid cells permutes the state tokens the same way (tested), whereas
  MooG's state is invariant to that permutation.

Grid = Grid Rec. without the recurrent term `p_t`. Both have exactly MooG's parameter
tree (`encoder`, `predictor`, `corrector`, `decoder`, `state_norm`; MooG's initial state
is not learned), so a parameter count is matched by construction and a MooG
checkpoint's layout is the same; compute is matched when `model.num_tokens` equals the
number of grid cells, which both baselines require (8 x 8 = 64 in the tiny configs).
Encoder tokens must be `token_dim` wide (`encoder_pos_embedding='project_add'`) so they
can stand in for, or be added to, state tokens.
"""

from typing import Literal

import chex
import ml_collections
from jaxtyping import Array, Bool, Float

from moog import model as moog_model

BackboneKind = Literal['moog', 'grid', 'grid_rec']
BACKBONES = ('moog', 'grid', 'grid_rec')


class GridMooG(moog_model.MooG):
  """*Grid*: MooG whose state is the current frame's encoder grid, no recurrence."""

  def correct_prenorm(
      self,
      predicted: Float[Array, '*b n d'],
      encoder_tokens: Float[Array, '*b N D'],
      encoder_token_mask: Bool[Array, '*b N'] | None = None,
  ) -> Float[Array, '*b N d']:
    """`e_t + Corrector(e_t, e_t)` (`correct` norms it); `predicted` is ignored."""
    chex.assert_equal_shape([predicted, encoder_tokens])
    update = self.corrector(encoder_tokens, inputs_kv=encoder_tokens,
                            kv_mask=encoder_token_mask)
    return encoder_tokens + update


class GridRecMooG(moog_model.MooG):
  """*Grid Rec.*: MooG whose state token i is tied to encoder grid cell i."""

  def correct_prenorm(
      self,
      predicted: Float[Array, '*b N d'],
      encoder_tokens: Float[Array, '*b N D'],
      encoder_token_mask: Bool[Array, '*b N'] | None = None,
  ) -> Float[Array, '*b N d']:
    """`q = p + e` cell by cell; `q + Corrector(q, e)` (`correct` norms it: `c = LN(.)`)."""
    chex.assert_equal_shape([predicted, encoder_tokens])
    queries = predicted + encoder_tokens
    update = self.corrector(queries, inputs_kv=encoder_tokens, kv_mask=encoder_token_mask)
    return queries + update


def grid_cells(model_config: ml_collections.ConfigDict, resolution: int | tuple[int, int]) -> int:
  """Number of encoder grid cells of a `resolution` frame (H / stride · W / stride)."""
  height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
  stride = 1
  for s in model_config.encoder_strides:
    stride *= s
  return (height // stride) * (width // stride)


def validate_backbone_config(
    kind: str, model_config: ml_collections.ConfigDict, resolution: int | tuple[int, int]
) -> None:
  """Raises ValueError naming the config field that does not fit backbone `kind`."""
  if kind not in BACKBONES:
    raise ValueError(f'config.backbone={kind!r} must be one of {BACKBONES}.')
  moog_model.validate_model_config(model_config)
  if kind == 'moog':
    return
  if model_config.encoder_pos_embedding != 'project_add':
    raise ValueError(
        f"config.backbone={kind!r} adds encoder tokens to state tokens, so it needs "
        "config.model.encoder_pos_embedding='project_add' (tokens token_dim wide), got "
        f'{model_config.encoder_pos_embedding!r}.'
    )
  cells = grid_cells(model_config, resolution)
  if model_config.num_tokens != cells:
    raise ValueError(
        f'config.backbone={kind!r}: config.model.num_tokens={model_config.num_tokens} must '
        f'equal the number of encoder grid cells, {cells} at config.data.resolution='
        f'{resolution} and stride {tuple(model_config.encoder_strides)}.'
    )


def build_backbone(kind: str, model_config: ml_collections.ConfigDict) -> moog_model.MooG:
  """MooG, Grid or Grid Rec. from `config.backbone` and `config.model`."""
  if kind not in BACKBONES:
    raise ValueError(f'config.backbone={kind!r} must be one of {BACKBONES}.')
  moog = moog_model.build_moog(model_config)
  if kind == 'moog':
    return moog
  return moog_model.rebuild_as(GridMooG if kind == 'grid' else GridRecMooG, moog)


def backbone_kind(config: ml_collections.ConfigDict) -> str:
  """`config.backbone`; configs without the field are MooG runs."""
  return config.get('backbone', 'moog')
