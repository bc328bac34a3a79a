r"""Non-recurrent attention readouts of the released Ego4D MooG heads.

Facts: docs/moog_reference.md §10 and §12.

The released point-track and box-track heads (`moog_ego4d_{point,box}_track_head_ckpt_
164335139.npz`) are upstream's `TrackingReadoutWrapper` around an `AttentionReadout`
(representations4d MooG colab). Unlike the recurrent heads of `moog/readouts/heads.py`, every
query reads *all* frames of a fixed-length clip in one cross-attention:

  AttentionReadout(features [*b, T, n, d], queries [*b, q, e]) -> [*b, q, C]
    feats = LayerNorm(with bias, eps 1e-6)(features) + temporal_embedding[T, 1, d]
    feats = flatten frames and tokens -> [*b, T·n, d]           (16 · 1024 = 16,384 keys)
    q     = Dense(width)(queries) (with bias), split into heads    (no QK-norm)
    k, v  = DenseGeneral(heads, width / heads)(feats), with bias
    attn  = softmax(q · k / sqrt(width / heads)) · v              (plain scaled dot product)
    tok   = q + Dense(width)(attn)
    tok   = tok + MLP(mlp_ratio · width)(LayerNorm(with bias)(tok))   (GELU, tanh)
    out   = Dense(C)(tok)

  Tracking wrapper (queries are points or boxes in [0, 1]):
    e = MLP(query_hidden -> query_dim)(Fourier(num_fourier_bases, replace)(query))
    tiles: e is repeated num_tiles times and a learned tile embedding [num_tiles, e]
      (N(0, 0.02)) is added (only when num_tiles > 1, as upstream); each tile is one
      readout query, so q = Q · num_tiles;
    C = frames_per_tile · per-frame channels; frame f = tile · frames_per_tile + t reads
      channels [t · c, (t + 1) · c) of its tile (upstream's '(k t c)' arrangement).

Released sizes (`released_point_head_config`, `released_box_head_config`):

  | | points | boxes |
  |---|---|---|
  | query | (x, y) in [0, 1] | (ymin, xmin, ymax, xmax) in [0, 1] |
  | Fourier(16, replace) | 64-d | 128-d |
  | query MLP | Dense(512) -> GELU -> Dense(512) | same |
  | heads / width / MLP | 8 / 1024 / 4096 | 4 / 1024 / 4096 |
  | tiles x frames per tile | 8 x 2 | 1 x 16 |
  | per-frame channels | x, y, visibility logit, certainty logit | 4 raw box values |
  | parameters | 11,338,760 | 11,424,832 |

Outputs follow this project's batch contract (docs/design.md), so the losses of
`moog/readouts/heads.py` apply unchanged: points are track-major (`position` [*b, N, T, 2],
sigmoid; `visibility_logit`, `certainty_logit`, `visible` [*b, N, T]) and boxes are
time-major (`boxes` [*b, T, K, 4], raw, no activation). Upstream returns both time-major
and `visible` as a 0/1 float; here `visible` is bool (`heads.visible_from_logits`,
σ(vis)·σ(cert) > 0.5).

Decisions (the spec is silent; the colab's module code was the reference where it has one):

* The query MLP is one hidden layer: Dense(query_hidden) -> GELU(tanh) -> Dense(query_dim)
  (the colab's `MLP(hidden_size=512, output_size=512)`).
* Fourier features use `modules.fourier_features` on [0, 1] inputs (× π, 2^0..2^15,
  [sin, cos], frequency-major), the same layout as upstream's `SampleFourierEmbedding`.
* Points: per-frame channels are (x, y, visibility logit, certainty logit) in this order;
  boxes: the 4 values in the order of the query box.
* The temporal embedding is stored as [T, 1, d] and the tile embedding as
  [num_tiles, query_dim], the shapes of upstream's `LearnedEmbedding` parameters, so
  released arrays load without reshaping. T is fixed by `num_frames`; a clip of another
  length is refused (ValueError), as upstream cannot broadcast it either.
* Features: a `moog_outputs` mapping (the state named by `features`, default
  'corrected') or a plain [*b, T, n, d] array. Gradients into the features are stopped
  unless `finetune=True`. NB: the released heads were trained on the colab's corrected
  states *before* the state LayerNorm (docs/moog_reference.md §12), whereas this project's
  `states_corrected` are taken after it; pass pre-norm states for parity with upstream:
  `MooG(return_corrected_prenorm=True)` returns them as `states_corrected_prenorm`, and
  `moog/released/ego4d.py` runs backbone and heads that way.
* Attention weights [*b, heads, q, T·n] are sown as `intermediates/attention_weights`.
* Parameter names are this project's; `moog/released/npz_io.py` maps the released names onto
  them.
"""

from __future__ import annotations

from collections.abc import Mapping

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float
import ml_collections

from moog import modules
from moog.readouts import heads

FEATURE_NORM_EPSILON = 1e-6  # Flax's LayerNorm default, as upstream.
EMBEDDING_INIT = nn.initializers.normal(stddev=0.02)
POINT_CHANNELS = 4  # x, y, visibility logit, certainty logit.
BOX_CHANNELS = 4


class AttentionReadout(nn.Module):
  """Cross-attention of a set of queries into all frames of a clip (upstream `AttentionReadout`).

  Attributes:
    num_outputs: output channels per query (upstream `num_classes`).
    num_frames: clip length T; fixes the temporal embedding.
    width: query / attention width (upstream `num_params`, 1024).
    num_heads: attention heads; head_dim = width / num_heads.
    mlp_ratio: hidden width of the MLP in units of `width` (4).
  """

  num_outputs: int
  num_frames: int = 16
  width: int = 1024
  num_heads: int = 8
  mlp_ratio: int = 4

  @nn.compact
  def __call__(
      self, features: Float[Array, '*b T n d'], queries: Float[Array, '*b q e']
  ) -> Float[Array, '*b q c']:
    """Reads `num_outputs` values per query from the features of all frames.

    Args:
      features: [*b, T, n, d] per-frame tokens (T = `num_frames`).
      queries: [*b, q, e] initialised queries.

    Returns:
      [*b, q, num_outputs].
    """
    if self.width % self.num_heads:
      raise ValueError(f'width {self.width} is not divisible by num_heads {self.num_heads}.')
    if features.shape[-3] != self.num_frames:
      raise ValueError(
          f'AttentionReadout has a temporal embedding for {self.num_frames} frames; got '
          f'features with {features.shape[-3]} frames ({features.shape}).')
    head_dim = self.width // self.num_heads
    feats = nn.LayerNorm(epsilon=FEATURE_NORM_EPSILON, name='feature_norm')(features)
    temporal = self.param(
        'temporal_embedding', EMBEDDING_INIT, (self.num_frames, 1, features.shape[-1]))
    feats = einops.rearrange(feats + temporal, '... t n d -> ... (t n) d')

    query = nn.Dense(self.width, name='query')(queries)
    query_heads = einops.rearrange(query, '... q (h c) -> ... q h c', h=self.num_heads)
    key = nn.DenseGeneral((self.num_heads, head_dim), name='key')(feats)
    value = nn.DenseGeneral((self.num_heads, head_dim), name='value')(feats)
    logits = jnp.einsum('...qhc,...khc->...hqk', query_heads / jnp.sqrt(head_dim), key)
    weights = jax.nn.softmax(logits, axis=-1)
    self.sow('intermediates', 'attention_weights', weights)
    attended = einops.rearrange(
        jnp.einsum('...hqk,...khc->...qhc', weights, value), '... q h c -> ... q (h c)')

    tokens = query + nn.Dense(self.width, name='attention_out')(attended)
    normed = nn.LayerNorm(epsilon=FEATURE_NORM_EPSILON, name='mlp_norm')(tokens)
    tokens = tokens + heads.MlpBlock(self.mlp_ratio * self.width, name='mlp')(normed)
    return nn.Dense(self.num_outputs, name='head')(tokens)


class _TiledTrackingReadout(nn.Module):
  """Shared body of the point and box heads (upstream `TrackingReadoutWrapper`).

  Attributes:
    num_frames: clip length T (16 for the release).
    num_tiles: queries per track; each tile predicts `num_frames / num_tiles` frames.
    channels: values per frame (4 for points and boxes).
    width, num_heads, mlp_ratio: `AttentionReadout` sizes.
    query_dim: width of the initialised queries (512).
    query_hidden: hidden width of the query MLP (512).
    num_fourier_bases: Fourier bases of the query embedding (16).
    features: which MooG state to read when given a `moog_outputs` mapping.
    finetune: if False, no gradient flows into the features.
  """

  num_frames: int = 16
  num_tiles: int = 1
  channels: int = 4
  width: int = 1024
  num_heads: int = 8
  mlp_ratio: int = 4
  query_dim: int = 512
  query_hidden: int = 512
  num_fourier_bases: int = 16
  features: heads.FeatureChoice = 'corrected'
  finetune: bool = False

  @property
  def frames_per_tile(self) -> int:
    if self.num_frames % self.num_tiles:
      raise ValueError(
          f'num_frames {self.num_frames} is not divisible by num_tiles {self.num_tiles}.')
    return self.num_frames // self.num_tiles

  @nn.compact
  def read(
      self,
      moog_outputs: Mapping[str, jax.Array] | Float[Array, '*b T n d'],
      conditioning: Float[Array, '*b m k'],
  ) -> Float[Array, '*b T m c']:
    """Raw per-frame outputs [*b, T, m, channels] (time-major, as upstream)."""
    if isinstance(moog_outputs, Mapping):
      features = heads.select_features(moog_outputs, self.features)
    else:
      features = moog_outputs
    if not self.finetune:
      features = jax.lax.stop_gradient(features)
    frames_per_tile = self.frames_per_tile

    queries = heads.MlpBlock(self.query_hidden, self.query_dim, name='query_init')(
        modules.fourier_features(conditioning, self.num_fourier_bases))
    if self.num_tiles > 1:
      tile_embedding = self.param(
          'tile_embedding', EMBEDDING_INIT, (self.num_tiles, self.query_dim))
      queries = queries[..., :, None, :] + tile_embedding.astype(queries.dtype)
      queries = einops.rearrange(queries, '... m k e -> ... (m k) e')
    out = AttentionReadout(
        num_outputs=frames_per_tile * self.channels,
        num_frames=self.num_frames,
        width=self.width,
        num_heads=self.num_heads,
        mlp_ratio=self.mlp_ratio,
        name='readout',
    )(features, queries)
    return einops.rearrange(
        out, '... (m k) (t c) -> ... (k t) m c', k=self.num_tiles, t=frames_per_tile)


class AttentionPointReadout(_TiledTrackingReadout):
  """Released Ego4D point-track head: 8 tiles of 2 frames per query point.

  Returns a dict with
    'position': [*b, N, T, 2] normalised (x, y) in [0, 1] (sigmoid);
    'visibility_logit', 'certainty_logit': [*b, N, T];
    'visible': [*b, N, T] bool, σ(vis)·σ(cert) > 0.5.
  """

  num_tiles: int = 8
  channels: int = POINT_CHANNELS
  num_heads: int = 8

  def __call__(
      self,
      moog_outputs: Mapping[str, jax.Array] | Float[Array, '*b T n d'],
      query_xy: Float[Array, '*b N 2'],
  ) -> dict[str, Float[Array, '*b N T ...'] | Bool[Array, '*b N T']]:
    """Tracks query points (given on frame 0 of the clip, as the colab) over all T frames.

    Args:
      moog_outputs: MooG outputs (the `features` state, [*b, T, n, d]) or that array.
      query_xy: [*b, N, 2] normalised (x, y) query positions in [0, 1].

    Returns:
      The dict described in the class docstring.
    """
    if self.channels != POINT_CHANNELS:
      raise ValueError(f'AttentionPointReadout needs channels={POINT_CHANNELS}.')
    out = einops.rearrange(self.read(moog_outputs, query_xy), '... t n c -> ... n t c')
    return {
        'position': jax.nn.sigmoid(out[..., :2]),
        'visibility_logit': out[..., 2],
        'certainty_logit': out[..., 3],
        'visible': heads.visible_from_logits(out[..., 2], out[..., 3]),
    }


class AttentionBoxReadout(_TiledTrackingReadout):
  """Released Ego4D box-track head: one query per box predicts all T frames.

  Returns a dict with 'boxes': [*b, T, K, 4] in the coordinate order of the query boxes
  (normalised [ymin, xmin, ymax, xmax] in this project), raw (no activation).
  """

  num_tiles: int = 1
  channels: int = BOX_CHANNELS
  num_heads: int = 4

  def __call__(
      self,
      moog_outputs: Mapping[str, jax.Array] | Float[Array, '*b T n d'],
      query_boxes: Float[Array, '*b K 4'],
  ) -> dict[str, Float[Array, '*b T K 4']]:
    """Tracks the frame-0 boxes over all T frames.

    Args:
      moog_outputs: MooG outputs (the `features` state, [*b, T, n, d]) or that array.
      query_boxes: [*b, K, 4] normalised boxes on frame 0.

    Returns:
      {'boxes': [*b, T, K, 4]}.
    """
    return {'boxes': self.read(moog_outputs, query_boxes)}


# ----------------------------------------------------------------------------------------
# Configs.
# ----------------------------------------------------------------------------------------

_SIZE_FIELDS = ('num_frames', 'num_tiles', 'width', 'num_heads', 'mlp_ratio', 'query_dim',
                'query_hidden', 'num_fourier_bases', 'features', 'finetune')


def released_point_head_config() -> ml_collections.ConfigDict:
  """Sizes of `moog_ego4d_point_track_head_ckpt_164335139.npz` (11,338,760 parameters)."""
  return ml_collections.ConfigDict(dict(
      kind='points', num_frames=16, num_tiles=8, width=1024, num_heads=8, mlp_ratio=4,
      query_dim=512, query_hidden=512, num_fourier_bases=16, features='corrected',
      finetune=False))


def released_box_head_config() -> ml_collections.ConfigDict:
  """Sizes of `moog_ego4d_box_track_head_ckpt_164335139.npz` (11,424,832 parameters)."""
  config = released_point_head_config()
  config.kind = 'boxes'
  config.num_tiles = 1
  config.num_heads = 4
  return config


def build_attention_readout(
    config: ml_collections.ConfigDict,
) -> AttentionPointReadout | AttentionBoxReadout:
  """`config.kind` 'points' or 'boxes' -> the head with the config's sizes."""
  kwargs = {name: config[name] for name in _SIZE_FIELDS}
  if config.kind == 'points':
    return AttentionPointReadout(**kwargs)
  if config.kind == 'boxes':
    return AttentionBoxReadout(**kwargs)
  raise ValueError(f"config.kind must be 'points' or 'boxes', got {config.kind!r}.")
