"""MooG building blocks: attention, transformers, Fourier embeddings, encoder, decoder.

Every module here is a Flax linen module used through `init`/`apply`, and every one
accepts any number of leading batch axes, written `*b` in the shape docs.

The layer conventions follow the ViT-22B-style "improved transformer" of the MooG
release (see `docs/design.md` and docs/moog_reference.md §5–§6):

* LayerNorms are mean-centred with a learnable scale and no bias (eps 1e-6 inside the
  blocks).
* q, k, v projections have no bias; the output projection has one.
* Queries and keys are RMS-normalised over `head_dim` with one scale vector shared by
  all heads; logits are scaled by 1/sqrt(head_dim).
* Self- and cross-attention run in parallel on the same normed queries and are summed;
  keys/values of the cross-attention are used raw (not normed).
* Kernels use Flax's default lecun-normal init and biases are zero.

Mixed precision: every module takes `dtype`, the dtype of its computation (float32 or
bfloat16). Parameters are always created and stored in float32 (Flax's `param_dtype`)
and cast to `dtype` when used; LayerNorm / RMSNorm statistics and attention softmaxes are
computed in float32 whatever `dtype` is.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import math
from typing import Literal

import einops
import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

BLOCK_NORM_EPSILON = 1e-6
PosEmbeddingMode = Literal['project_add', 'concat']


def _scale_only_layer_norm(
    name: str, dtype: Dtype, epsilon: float = BLOCK_NORM_EPSILON
) -> nn.LayerNorm:
  """Mean-centred LayerNorm with a learnable scale and no bias."""
  return nn.LayerNorm(epsilon=epsilon, use_bias=False, use_scale=True, dtype=dtype, name=name)


# ----------------------------------------------------------------------------------------
# Fourier positional embeddings.
# ----------------------------------------------------------------------------------------


def grid_coordinates(height: int, width: int) -> Float[Array, 'H W 2']:
  """Regular (y, x) grid over [-1, 1] x [-1, 1], endpoints included.

  Args:
    height: number of rows H.
    width: number of columns W.

  Returns:
    `[H, W, 2]` array; channel 0 is y (row), channel 1 is x (column), `ij` indexing.
  """
  ys = jnp.linspace(-1.0, 1.0, height)
  xs = jnp.linspace(-1.0, 1.0, width)
  return jnp.stack(jnp.meshgrid(ys, xs, indexing='ij'), axis=-1)


def fourier_features(coords: Float[Array, '*s D'], num_bases: int) -> Float[Array, '*s F']:
  """NeRF-style sinusoidal features of coordinates, F = 2 * D * num_bases.

  The coordinates are multiplied by pi and then by the frequencies 2^0 ... 2^(B-1).
  Layout: `[sin(all), cos(all)]`; inside each half the order is frequency-major, then
  coordinate, i.e. `sin(2^0 pi y), sin(2^0 pi x), sin(2^1 pi y), ...`. As upstream, cos
  is computed as `sin(phase + pi/2)`, so values match the release bit for bit.

  Args:
    coords: coordinates, usually in [-1, 1] (the readouts use [0, 1]).
    num_bases: number of frequencies B.

  Returns:
    `[*s, 2 * D * num_bases]` features.
  """
  frequencies = 2.0 ** jnp.arange(num_bases, dtype=coords.dtype)
  phases = jnp.pi * coords[..., None, :] * frequencies[:, None]
  phases = einops.rearrange(phases, '... bases dims -> ... (bases dims)')
  return jnp.sin(jnp.concatenate([phases, phases + 0.5 * jnp.pi], axis=-1))


class GridFourierEmbedding(nn.Module):
  """Adds or concatenates a Fourier embedding of the feature-map grid position.

  Attributes:
    num_bases: Fourier frequencies per coordinate; the embedding is 4 * num_bases wide.
    mode: 'project_add' returns `x + Dense(C)(PE)` (MOVi); 'concat' returns
      `[x, PE]` (released Ego4D checkpoint).
    dtype: computation dtype.
  """

  num_bases: int
  mode: PosEmbeddingMode = 'project_add'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Float[Array, '*b h w C']) -> Float[Array, '*b h w E']:
    """Returns `[*b, h, w, C]` (project_add) or `[*b, h, w, C + 4 * num_bases]` (concat)."""
    height, width, channels = features.shape[-3:]
    embedding = fourier_features(grid_coordinates(height, width), self.num_bases)
    if self.mode == 'project_add':
      return features + nn.Dense(channels, dtype=self.dtype, name='projection')(embedding)
    if self.mode == 'concat':
      embedding = jnp.broadcast_to(embedding, features.shape[:-1] + embedding.shape[-1:])
      embedding = embedding.astype(features.dtype)
      return jnp.concatenate([features, embedding], axis=-1)
    raise ValueError(f"mode must be 'project_add' or 'concat', got {self.mode!r}.")


# ----------------------------------------------------------------------------------------
# Attention and transformers.
# ----------------------------------------------------------------------------------------


AttentionImpl = Literal['explicit', 'dot_product_attention']
ATTENTION_IMPLS = ('explicit', 'dot_product_attention')


def _softmax_attention(
    query: Float[Array, '*b h q d'],
    key: Float[Array, '*b h k d'],
    value: Float[Array, '*b h k d'],
    key_mask: Bool[Array, '*b 1 1 k'] | None,
) -> tuple[Float[Array, '*b h q d'], Float[Array, '*b h q k']]:
  """`softmax(q k^T) v` on head-major inputs; returns (attended, float32 weights)."""
  # bfloat16 logits lose too much precision for the softmax: it always runs in float32.
  logits = jnp.einsum('...qd,...kd->...qk', query, key, preferred_element_type=jnp.float32)
  if key_mask is None:
    weights = jax.nn.softmax(logits, axis=-1)
  else:
    logits = jnp.where(key_mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = jnp.where(jnp.any(key_mask, axis=-1, keepdims=True), weights, 0.0)
  return jnp.einsum('...qk,...kd->...qd', weights.astype(value.dtype), value), weights


@jax.custom_vjp
def explicit_attention(query, key, value, key_mask):
  """`_softmax_attention` with a hand-written backward pass (same gradients).

  Autodiff of the einsums makes XLA transpose the [q, k] weight matrices for the
  value and key gradients, which on a CPU costs more than the matmuls themselves
  (docs/results.md, "Against the official MooG"). Here every gradient is a product
  whose large operand keeps its layout; only the small [*, d] results are transposed.
  The weights are an output too, so their cotangent (e.g. a loss on attention maps)
  flows back; a key mask gets no gradient.
  """
  return _softmax_attention(query, key, value, key_mask)


def _explicit_attention_fwd(query, key, value, key_mask):
  # With symbolic zeros the array arguments arrive wrapped (`.value`); None stays None.
  key_mask = None if key_mask is None else key_mask.value
  attended, weights = _softmax_attention(query.value, key.value, value.value, key_mask)
  return (attended, weights), (query.value, key.value, value.value, weights)


def _explicit_attention_bwd(residuals, cotangents):
  query, key, value, weights = residuals
  d_attended, d_weights = cotangents
  if isinstance(d_attended, jax.custom_derivatives.SymbolicZero):
    d_attended = jnp.zeros(d_attended.shape, d_attended.dtype)
  d_value = jnp.einsum('...qd,...qk->...dk', d_attended, weights.astype(d_attended.dtype))
  d_weights_total = jnp.einsum('...qd,...kd->...qk', d_attended, value,
                               preferred_element_type=jnp.float32)
  if not isinstance(d_weights, jax.custom_derivatives.SymbolicZero):
    d_weights_total = d_weights_total + d_weights
  # Softmax backward; masked keys and fully masked rows have weight 0, so no gradient.
  d_logits = weights * (d_weights_total
                        - jnp.sum(d_weights_total * weights, axis=-1, keepdims=True))
  d_logits = d_logits.astype(query.dtype)
  d_query = jnp.einsum('...qk,...kd->...qd', d_logits, key)
  d_key = jnp.einsum('...qd,...qk->...dk', query, d_logits)
  return (d_query, jnp.swapaxes(d_key, -1, -2), jnp.swapaxes(d_value, -1, -2), None)


explicit_attention.defvjp(_explicit_attention_fwd, _explicit_attention_bwd,
                          symbolic_zeros=True)


def fused_attention(
    query: Float[Array, '*b q h d'],
    key: Float[Array, '*b k h d'],
    value: Float[Array, '*b k h d'],
    key_mask: Bool[Array, '*b k'] | None,
) -> Float[Array, '*b q h d']:
  """The same attention through `jax.nn.dot_product_attention`, weights never stored.

  cuDNN's flash attention on NVIDIA GPUs when it supports the dtype (bfloat16/float16),
  XLA's implementation otherwise. Logits are already scaled by the caller. A query whose
  keys are all masked gets zeros, as in `explicit_attention`.
  """
  batch_shape = query.shape[:-3]
  flat = lambda x: x.reshape((-1,) + x.shape[len(batch_shape):])
  use_cudnn = (jax.default_backend() == 'gpu'
               and query.dtype in (jnp.bfloat16, jnp.float16))
  mask = None if key_mask is None else flat(key_mask)[:, None, None, :]
  attended = jax.nn.dot_product_attention(
      flat(query), flat(key), flat(value), mask=mask, scale=1.0,
      implementation='cudnn' if use_cudnn else 'xla')
  attended = attended.reshape(query.shape)
  if key_mask is not None:
    any_key = jnp.any(key_mask, axis=-1)[..., None, None, None]
    attended = jnp.where(any_key, attended, 0.0)
  return attended


class Attention(nn.Module):
  """Multi-head dot-product attention with QK RMS-norm.

  With `impl='explicit'` the attention weights `[*b, heads, q, k]` are sown as
  `intermediates/attention_weights`. `impl='dot_product_attention'` never stores them
  (less memory, cuDNN flash attention on GPUs); when the 'intermediates' collection is
  mutable it runs the explicit path instead, so analyses still see the weights. Both
  compute the same function (tested equal).

  Attributes:
    num_heads: number of heads.
    qkv_size: total query/key/value width over all heads (head_dim = qkv_size / heads).
    dtype: computation dtype; the softmax runs in float32.
    impl: 'explicit' or 'dot_product_attention' (see above).
  """

  num_heads: int
  qkv_size: int
  dtype: Dtype = jnp.float32
  impl: AttentionImpl = 'explicit'

  @nn.compact
  def __call__(
      self,
      inputs_q: Float[Array, '*b q d_q'],
      inputs_kv: Float[Array, '*b k d_kv'],
      key_mask: Bool[Array, '*b k'] | None = None,
  ) -> Float[Array, '*b q d_q']:
    """Attends from `inputs_q` to `inputs_kv`.

    Args:
      inputs_q: query tokens.
      inputs_kv: key/value tokens.
      key_mask: optional; False removes that key for every query. The result equals
        physically dropping the key. A query whose keys are all masked gets all-zero
        weights, so only the output bias remains (upstream's masking would average
        all values uniformly instead; MooG's release never masks, so no released
        result depends on that choice).

    Returns:
      `[*b, q, d_q]`, projected back to the query width.
    """
    if self.qkv_size % self.num_heads:
      raise ValueError(f'qkv_size={self.qkv_size} is not divisible by num_heads={self.num_heads}.')
    if self.impl not in ATTENTION_IMPLS:
      raise ValueError(f'impl must be one of {ATTENTION_IMPLS}, got {self.impl!r}.')
    head_dim = self.qkv_size // self.num_heads
    projection = functools.partial(
        nn.DenseGeneral, features=(self.num_heads, head_dim), use_bias=False, dtype=self.dtype
    )
    query = projection(name='query')(inputs_q)
    key = projection(name='key')(inputs_kv)
    value = projection(name='value')(inputs_kv)
    # RMSNorm over the last axis (head_dim): its scale has shape [head_dim] and is
    # therefore shared by all heads.
    query = nn.RMSNorm(epsilon=BLOCK_NORM_EPSILON, dtype=self.dtype, name='query_norm')(query)
    key = nn.RMSNorm(epsilon=BLOCK_NORM_EPSILON, dtype=self.dtype, name='key_norm')(key)
    query = query / jnp.sqrt(head_dim)

    if self.impl == 'dot_product_attention' and not self.is_mutable_collection('intermediates'):
      attended = fused_attention(query, key, value, key_mask)
    else:
      head_major = lambda x: einops.rearrange(x, '... n h d -> ... h n d')
      mask = None if key_mask is None else key_mask[..., None, None, :]
      attended, weights = explicit_attention(
          head_major(query), head_major(key), head_major(value), mask)
      self.sow('intermediates', 'attention_weights', weights)
      attended = einops.rearrange(attended, '... h q d -> ... q h d')
    return nn.DenseGeneral(
        features=inputs_q.shape[-1], axis=(-2, -1), use_bias=True, dtype=self.dtype,
        name='output',
    )(attended)


class TransformerBlock(nn.Module):
  """Pre-norm block: `a = q + SA(LN(q)) + CA(LN(q), kv)`, then `a + MLP(LN(a))`.

  Cross-attention runs whenever `inputs_kv` is given; self-attention unless disabled.

  Attributes:
    num_heads: attention heads (shared by SA and CA).
    qkv_size: total attention width.
    mlp_dim: hidden width of the GELU(tanh) MLP.
    self_attention: False gives a cross-attention-only block (the pixel decoder).
    dtype: computation dtype.
    attention_impl: `Attention.impl`.
  """

  num_heads: int
  qkv_size: int
  mlp_dim: int
  self_attention: bool = True
  dtype: Dtype = jnp.float32
  attention_impl: AttentionImpl = 'explicit'

  @nn.compact
  def __call__(
      self,
      queries: Float[Array, '*b n d'],
      inputs_kv: Float[Array, '*b m e'] | None = None,
      kv_mask: Bool[Array, '*b m'] | None = None,
  ) -> Float[Array, '*b n d']:
    if not self.self_attention and inputs_kv is None:
      raise ValueError('A cross-attention-only block needs inputs_kv.')
    attention = functools.partial(
        Attention, num_heads=self.num_heads, qkv_size=self.qkv_size, dtype=self.dtype,
        impl=self.attention_impl,
    )
    normed = _scale_only_layer_norm('attention_norm', self.dtype)(queries)
    updated = queries
    if self.self_attention:
      updated = updated + attention(name='self_attention')(normed, normed)
    if inputs_kv is not None:
      updated = updated + attention(name='cross_attention')(normed, inputs_kv, kv_mask)

    hidden = _scale_only_layer_norm('mlp_norm', self.dtype)(updated)
    hidden = nn.Dense(self.mlp_dim, dtype=self.dtype, name='mlp_in')(hidden)
    hidden = nn.gelu(hidden, approximate=True)
    return updated + nn.Dense(queries.shape[-1], dtype=self.dtype, name='mlp_out')(hidden)


class Transformer(nn.Module):
  """Stack of `TransformerBlock`s ending in a scale-only LayerNorm.

  Optional input Dense(hidden_size) before the blocks; optional output Dense after the
  final norm: to `output_size` when set, otherwise back to the input width when
  `hidden_size` differs from it. Residual connections around the whole stack (MooG's
  predictor and corrector) are the caller's business.

  Attributes:
    num_layers: number of blocks.
    num_heads: heads per attention.
    qkv_size: total attention width.
    mlp_dim: MLP hidden width.
    self_attention: whether blocks self-attend (cross-attention follows `inputs_kv`).
    hidden_size: optional width of the input projection.
    output_size: optional width of the output projection.
    dtype: computation dtype.
    attention_impl: `Attention.impl`.
  """

  num_layers: int
  num_heads: int
  qkv_size: int
  mlp_dim: int
  self_attention: bool = True
  hidden_size: int | None = None
  output_size: int | None = None
  dtype: Dtype = jnp.float32
  attention_impl: AttentionImpl = 'explicit'

  @nn.compact
  def __call__(
      self,
      queries: Float[Array, '*b *n d'],
      inputs_kv: Float[Array, '*b m e'] | None = None,
      kv_mask: Bool[Array, '*b m'] | None = None,
      num_token_axes: int = 1,
  ) -> Float[Array, '*b *n o']:
    """Runs the stack.

    Args:
      queries: query tokens; the last `num_token_axes` axes before the feature axis
        are token axes and are flattened for attention (e.g. the decoder's h, w).
      inputs_kv: optional key/value tokens for cross-attention.
      kv_mask: optional boolean key mask for the cross-attention.
      num_token_axes: number of token axes in `queries`.

    Returns:
      Tokens with the input token axes and width `output_size`, the input width, or
      `hidden_size`, per the rules above.
    """
    if num_token_axes < 1:
      raise ValueError(f'num_token_axes must be >= 1, got {num_token_axes}.')
    batch_shape = queries.shape[: -1 - num_token_axes]
    token_shape = queries.shape[-1 - num_token_axes : -1]
    input_width = queries.shape[-1]
    x = queries.reshape(batch_shape + (-1, input_width))

    if self.hidden_size is not None:
      x = nn.Dense(self.hidden_size, dtype=self.dtype, name='input_projection')(x)
    for i in range(self.num_layers):
      x = TransformerBlock(
          num_heads=self.num_heads,
          qkv_size=self.qkv_size,
          mlp_dim=self.mlp_dim,
          self_attention=self.self_attention,
          dtype=self.dtype,
          attention_impl=self.attention_impl,
          name=f'block_{i}',
      )(x, inputs_kv, kv_mask)
    x = _scale_only_layer_norm('final_norm', self.dtype)(x)

    output_size = self.output_size
    if output_size is None and self.hidden_size not in (None, input_width):
      output_size = input_width
    if output_size is not None:
      x = nn.Dense(output_size, dtype=self.dtype, name='output_projection')(x)
    return x.reshape(batch_shape + token_shape + (x.shape[-1],))


# ----------------------------------------------------------------------------------------
# Frame encoder.
# ----------------------------------------------------------------------------------------


class ConvBackbone(nn.Module):
  """3x3 SAME convolutions with bias, GELU between them, scale-only LayerNorm at the end.

  Attributes:
    channels: output channels per conv.
    strides: stride per conv (same for y and x).
    dtype: computation dtype.
  """

  channels: Sequence[int]
  strides: Sequence[int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Float[Array, '*b H W c']) -> Float[Array, '*b h w C']:
    if len(self.channels) != len(self.strides):
      raise ValueError(
          f'channels {tuple(self.channels)} and strides {tuple(self.strides)} differ in length.'
      )
    x = images
    for i, (channels, stride) in enumerate(zip(self.channels, self.strides)):
      x = nn.Conv(channels, (3, 3), strides=(stride, stride), padding='SAME', dtype=self.dtype,
                  name=f'conv_{i}')(x)
      if i < len(self.channels) - 1:
        x = nn.gelu(x, approximate=True)
    return _scale_only_layer_norm('output_norm', self.dtype)(x)


class TokenProjection(nn.Module):
  """Dense(hidden) -> scale-only LayerNorm [-> Dense back to the input width].

  This is exactly upstream's 0-layer `ImprovedTransformer(hidden_size=...)`: with no
  blocks only the input projection, the final norm and (when the hidden width differs
  from the input width, as in the concat variant) the output projection remain.

  Attributes:
    hidden_size: width after the input projection.
    dtype: computation dtype.
  """

  hidden_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Float[Array, '*b n c']) -> Float[Array, '*b n c']:
    x = nn.Dense(self.hidden_size, dtype=self.dtype, name='input_projection')(tokens)
    x = _scale_only_layer_norm('final_norm', self.dtype)(x)
    if self.hidden_size != tokens.shape[-1]:
      x = nn.Dense(tokens.shape[-1], dtype=self.dtype, name='output_projection')(x)
    return x


class FrameEncoder(nn.Module):
  """Per-frame encoder: convs -> LN -> grid Fourier PE -> flatten -> token projection.

  There is no temporal mixing: frames (and leading batch axes) are independent.

  Attributes:
    channels: conv channels (paper: 64, 128, 128, 256, 256, 512).
    strides: conv strides (MOVi: 1, 1, 1, 2, 1, 2; Ego4D: 2, 1, 1, 2, 1, 1).
    num_fourier_bases: encoder PE frequencies (20).
    pos_embedding: 'project_add' (tokens are `token_dim` wide) or 'concat' (tokens are
      `channels[-1] + 4 * num_fourier_bases` wide).
    token_dim: width of the token projection (the state width).
    dtype: computation dtype.
  """

  channels: Sequence[int]
  strides: Sequence[int]
  num_fourier_bases: int
  pos_embedding: PosEmbeddingMode
  token_dim: int
  dtype: Dtype = jnp.float32

  @property
  def total_stride(self) -> int:
    """Ratio of frame size to token-grid size."""
    return math.prod(self.strides)

  @nn.compact
  def __call__(self, frames: Float[Array, '*b H W 3']) -> Float[Array, '*b N D']:
    """Encodes frames to `[*b, (H/stride) * (W/stride), D]` tokens."""
    x = ConvBackbone(self.channels, self.strides, dtype=self.dtype, name='backbone')(frames)
    x = GridFourierEmbedding(self.num_fourier_bases, self.pos_embedding, dtype=self.dtype,
                             name='pos_embedding')(x)
    x = einops.rearrange(x, '... h w c -> ... (h w) c')
    return TokenProjection(self.token_dim, dtype=self.dtype, name='token_projection')(x)


# ----------------------------------------------------------------------------------------
# Decoder and pixel subsampling.
# ----------------------------------------------------------------------------------------


class PixelDecoder(nn.Module):
  """Decodes values at query coordinates by cross-attending into a token set.

  Queries are `[zeros(d), FourierPE(coords)]` (width d + 4 * num_fourier_bases); blocks
  are cross-attention only by default, so every query pixel is decoded independently
  and subsampling does not change any pixel's value. Output head: linear Dense.

  Attributes:
    num_layers, num_heads, qkv_size, mlp_dim: transformer sizes.
    num_fourier_bases: PE frequencies for the query coordinates (16).
    out_channels: output channels (3 for RGB).
    self_attention: False (default, the MooG training code's `cross_attn_only`): blocks
      only cross-attend. True: blocks also self-attend over the query pixels (the
      layout of the Ego4D colab's decoder, whose blocks are written without the flag);
      pixels then depend on each other, so subsampling changes their values.
    dtype: computation dtype; the output head always returns float32 (the loss is
      computed in float32).
    attention_impl: `Attention.impl`.
  """

  num_layers: int
  num_heads: int
  qkv_size: int
  mlp_dim: int
  num_fourier_bases: int
  out_channels: int = 3
  self_attention: bool = False
  dtype: Dtype = jnp.float32
  attention_impl: AttentionImpl = 'explicit'

  @nn.compact
  def __call__(
      self,
      tokens: Float[Array, '*b n d'],
      coords: Float[Array, '*#b h w 2'],
  ) -> Float[Array, '*b h w c']:
    """Decodes `tokens` at `coords`.

    Args:
      tokens: the state to decode.
      coords: (y, x) coordinates in [-1, 1]; leading axes broadcast against `*b`
        (e.g. a shared `[h, w, 2]` grid from `grid_coordinates`).

    Returns:
      `[*b, h, w, out_channels]`.
    """
    batch_shape = tokens.shape[:-2]
    coords = jnp.broadcast_to(coords, batch_shape + coords.shape[-3:])
    embedding = fourier_features(coords, self.num_fourier_bases).astype(self.dtype)
    zeros = jnp.zeros(coords.shape[:-1] + (tokens.shape[-1],), self.dtype)
    queries = jnp.concatenate([zeros, embedding], axis=-1)
    x = Transformer(
        num_layers=self.num_layers,
        num_heads=self.num_heads,
        qkv_size=self.qkv_size,
        mlp_dim=self.mlp_dim,
        self_attention=self.self_attention,
        dtype=self.dtype,
        attention_impl=self.attention_impl,
        name='transformer',
    )(queries, inputs_kv=tokens, num_token_axes=2)
    return nn.Dense(self.out_channels, dtype=jnp.float32, name='output_head')(x)


def sample_lattice_offsets(
    rng: jax.Array, batch_shape: tuple[int, ...], factor: int
) -> Int[Array, '*b 2']:
  """Random lattice phase o in [0, factor - 1], independently for y and x."""
  return jax.random.randint(rng, batch_shape + (2,), 0, factor, dtype=jnp.int32)


def lattice_subsample(
    images: Float[Array, '*b H W C'],
    factor: int,
    offsets: Int[Array, '*b 2'] | None = None,
) -> Float[Array, '*b h w C']:
  """Keeps a stride-`factor` lattice of pixels, `h = H / factor`, `w = W / factor`.

  Rolls each image by its (y, x) offset, then resizes with nearest neighbour, which
  keeps source row `factor * i + factor // 2` of the rolled image, i.e. row
  `(factor * i + factor // 2 - o_y) mod H` of the original (same for columns). Apply it
  with the same offsets to the coordinate grid and to the target frame so the two stay
  aligned exactly.

  The lattice wraps around the border (for o > factor // 2 the first kept row comes
  from the bottom of the image). Upstream flags this with a TODO; we keep it for
  parity: it does not bias an L2 loss because every pixel has the same chance of being
  kept.

  Args:
    images: images (or coordinate grids) to subsample.
    factor: subsampling factor; 1 returns `images` unchanged.
    offsets: per-image roll; None means offset 0 (evaluation).

  Returns:
    The subsampled images.
  """
  if factor == 1:
    return images
  *batch_shape, height, width, channels = images.shape
  if height % factor or width % factor:
    raise ValueError(f'Frame size {height}x{width} is not divisible by subsample factor {factor}.')
  if offsets is not None:
    flat_images = images.reshape((-1, height, width, channels))
    flat_offsets = offsets.reshape((-1, 2))
    roll = lambda image, offset: jnp.roll(image, (offset[0], offset[1]), axis=(0, 1))
    images = jax.vmap(roll)(flat_images, flat_offsets).reshape(images.shape)
  new_shape = (*batch_shape, height // factor, width // factor, channels)
  return jax.image.resize(images, new_shape, method='nearest')
