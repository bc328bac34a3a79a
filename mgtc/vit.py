"""VideoMAE-style video ViT that runs on a kept token subset, and its MAE pretrainer.

Facts follow VideoMAE ViT-B/16 (docs/mgtc_reference.md §4): tubelet embedding 2 x P x P -> d,
fixed 1-D sinusoidal position table over the flat raster index (no cls token, nothing
learnable), pre-LN blocks with LayerNorm eps 1e-6, q and v biases only, MLP ratio 4,
stochastic depth, mean pooling -> fc_norm -> dropout -> Linear head (init x 0.001).

The encoder sees only the kept tokens (no mask tokens). In ratio mode there is no
attention mask; in threshold mode a key-padding mask hides the padding slots from
attention and from the mean pool.

Decisions taken here (level [R]):
  * The tubelet embedding is a Dense over patches flattened in (t, h, w, c) order,
    equal to the Conv3d with kernel = stride = (s, P, P): a PyTorch kernel
    (d, c, s, P, P) ports as `rearrange(k, 'd c t h w -> (t h w c) d')`.
  * Only kept tubelets are embedded, and their rows of the position table are
    gathered with the same indices. Since the embedding is per-token linear this
    equals "embed all, add the table to all, gather" (`selection.
    add_positions_and_gather`, checked in the tests), and it makes the embedding cost
    N_kept * (s * P * P * c) * d, the convention of the GFLOPs table in docs/mgtc_reference.md.
  * The position table is built from the input's token count at trace time, so a
    32-frame clip gets the 3,136-row table whose first 1,568 rows are the 16-frame one.
  * Inits: Linear kernels truncated normal (std 0.02), biases 0; head std 0.02 * 0.001;
    tubelet kernel uniform with variance 1 / (3 * fan_in) (the PyTorch Conv3d default),
    bias 0; mask token truncated normal (std 0.02).
  * Softmax and LayerNorm run in float32 whatever `dtype` the matmuls use.
  * Parameter names are shared: the classifier's `patch_embed` and `encoder` subtrees
    have the same structure as the pretrainer's, so fine-tuning copies them over.
  * Optional motion input, not in VideoMAE (`config.motion_input`, 'none' = raw pixels =
    VideoMAE): the encoder sees `config.motion_input_scale` times the clip minus its
    mean over frames ('residual') or the difference of consecutive frames, 0 for the
    first ('difference'): the clip's motion with its static appearance removed. Token
    rules still score the raw clip (the task selects before the model runs). It exists
    for the tiny CPU setting of configs/mgtc_tiny.py: on the synthetic motion classes
    (32^2, motion of ~1 px per frame) the raw-pixel ViT stays at chance for 1,500 steps,
    because the class signal is a tiny second-order residual on appearance and the fixed
    position table (measurements in configs/mgtc_tiny.py).
"""
import dataclasses
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mgtc import selection
from videolib import checkpoint

_LINEAR_INIT = nn.initializers.truncated_normal(stddev=0.02)
_MLP_RATIO_DEFAULT = 4.0
# Runs written before the field existed saw raw pixels.
checkpoint.register_added_config_fields({"model.motion_input": "none",
                                          "model.motion_input_scale": 1.0,
                                          "model.input_standardisation": "none"})
MOTION_INPUTS = ("none", "residual", "difference")
# Per-channel (mean, std) the encoder subtracts and divides by; released VideoMAE
# weights expect 'imagenet' (mgtc/videomae_weights.py).
INPUT_STANDARDISATIONS = {
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.num_frames = 16  # Clip length T (used by data and FLOP accounting).
  config.image_size = 224  # Frame side (used by data and FLOP accounting).
  config.channels = 3
  config.patch_size = 16  # P.
  config.tubelet_size = 2  # s, frames per token.
  config.width = 768
  config.depth = 12
  config.num_heads = 12
  config.mlp_ratio = _MLP_RATIO_DEFAULT
  config.layer_norm_eps = 1e-6
  config.drop_path_rate = 0.1  # Max stochastic depth, linear over the blocks.
  config.fc_drop_rate = 0.0  # Dropout before the head.
  config.head_init_scale = 1e-3
  config.num_classes = 400
  config.dtype = "float32"  # Matmul dtype; 'bfloat16' on accelerators.
  # Masked-autoencoder pretraining (VideoMAEPretrainer only).
  config.mask_ratio = 0.9  # Tube masking ratio.
  config.decoder_width = 384
  config.decoder_depth = 4
  config.decoder_num_heads = 6
  config.normalize_targets = True  # Per-tubelet, per-channel normalised pixels.
  # Encoder input (`motion_input`): 'none' = raw pixels (VideoMAE); 'residual' = scale *
  # (x - its mean over frames); 'difference' = scale * (x_t - x_{t-1}), 0 at t = 0.
  config.motion_input = "none"
  config.motion_input_scale = 1.0
  # Frames in [0, 1] are standardised per channel first ('imagenet': as the released
  # VideoMAE models were trained; 'none': as they come).
  config.input_standardisation = "none"
  return config


def vit_b_config() -> ml_collections.ConfigDict:
  """ViT-B/16: 12 layers, 768 wide, 12 heads; 16 x 224^2 gives 1,568 tokens."""
  return _base_config()


def vit_s_config() -> ml_collections.ConfigDict:
  """ViT-S/16: 12 layers, 384 wide, 6 heads; decoder 192 wide, 3 heads."""
  config = _base_config()
  config.width = 384
  config.num_heads = 6
  config.decoder_width = 192
  config.decoder_num_heads = 3
  return config


def vit_tiny_config() -> ml_collections.ConfigDict:
  """CPU test size: 4 x 32^2 clips, patch 8 -> 2 x 4 x 4 = 32 tokens, 4 x 128 wide."""
  config = _base_config()
  config.num_frames = 4
  config.image_size = 32
  config.patch_size = 8
  config.width = 128
  config.depth = 4
  config.num_heads = 4
  config.drop_path_rate = 0.0
  config.num_classes = 10
  config.decoder_width = 64
  config.decoder_depth = 2
  config.decoder_num_heads = 2
  return config


def sinusoid_position_table(num_positions: int, width: int) -> np.ndarray:
  """Fixed 1-D sinusoidal table, float32 [num_positions, width].

  Column j uses frequency 10000^(-2 * floor(j / 2) / width); even columns hold the
  sine and odd columns the cosine (interleaved, the VideoMAE layout).
  """
  positions = np.arange(num_positions, dtype=np.float64)[:, None]
  exponents = 2 * (np.arange(width) // 2) / width
  angles = positions / np.power(10000.0, exponents)[None, :]
  table = np.where(np.arange(width) % 2 == 0, np.sin(angles), np.cos(angles))
  return table.astype(np.float32)


def patchify(video: jax.Array, patch_size: int, tubelet_size: int = 2) -> jax.Array:
  """Cuts tubelets: [B, T, H, W, C] -> [B, N, s * P * P * C], (t, h, w, c) order."""
  selection.token_grid(video.shape, patch_size, tubelet_size)  # Validates.
  return einops.rearrange(
      video, "b (t s) (h p) (w q) c -> b (t h w) (s p q c)",
      s=tubelet_size, p=patch_size, q=patch_size,
  )


def check_motion_input(kind: str) -> None:
  """Raises ValueError, naming the field, if `kind` is not one of `MOTION_INPUTS`."""
  if kind not in MOTION_INPUTS:
    raise ValueError(f"config.model.motion_input={kind!r} is not one of {MOTION_INPUTS}.")


def check_input_standardisation(kind: str) -> None:
  """Raises ValueError, naming the field, unless `kind` is in `INPUT_STANDARDISATIONS`."""
  if kind not in INPUT_STANDARDISATIONS:
    raise ValueError(f"config.model.input_standardisation={kind!r} is not one of "
                     f"{tuple(INPUT_STANDARDISATIONS)}.")


def encoder_pixels(video: jax.Array, standardisation: str, motion: str,
                   motion_scale: float) -> jax.Array:
  """What the tubelet embedding sees: the clip standardised, then `motion_input`."""
  check_input_standardisation(standardisation)
  if standardisation != "none":
    mean, std = INPUT_STANDARDISATIONS[standardisation]
    video = (video - jnp.asarray(mean, video.dtype)) / jnp.asarray(std, video.dtype)
  return motion_input(video, motion, motion_scale)


def motion_input(video: jax.Array, kind: str, scale: float = 1.0) -> jax.Array:
  """The encoder's input [B, T, H, W, C] from clips [B, T, H, W, C] (`MOTION_INPUTS`).

  'none': the clip itself. 'residual': `scale * (video - its mean over frames)`.
  'difference': `scale * (frame t - frame t - 1)`, zero for the first frame.
  """
  check_motion_input(kind)
  if kind == "none":
    return video
  if kind == "residual":
    return scale * (video - jnp.mean(video, axis=1, keepdims=True))
  return scale * jnp.diff(video, axis=1, prepend=video[:, :1])


def masked_mean(tokens: jax.Array, valid: jax.Array | None) -> jax.Array:
  """Mean over tokens [B, K, D] -> [B, D], counting only `valid` [B, K] ones."""
  if valid is None:
    return jnp.mean(tokens, axis=1)
  weights = valid.astype(tokens.dtype)[..., None]
  total = jnp.sum(tokens * weights, axis=1)
  return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per example."""

  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with q and v biases only (the k bias is fixed 0).

  The fused `qkv` kernel is [d, 3d] in (qkv, head, head_dim) column order, the
  layout of VideoMAE's Linear(d, 3d), so pretrained weights port by transposing.
  """

  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self, x: jax.Array, key_padding_mask: jax.Array | None = None
  ) -> jax.Array:
    """[B, K, d] (+ optional bool [B, K], True = real key) -> [B, K, d]."""
    width = x.shape[-1]
    qkv = nn.Dense(3 * width, use_bias=False, kernel_init=_LINEAR_INIT,
                   dtype=self.dtype, name="qkv")(x)
    q_bias = self.param("q_bias", nn.initializers.zeros, (width,))
    v_bias = self.param("v_bias", nn.initializers.zeros, (width,))
    qkv_bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias])
    qkv = qkv + qkv_bias.astype(qkv.dtype)
    q, k, v = einops.rearrange(
        qkv, "b n (three h e) -> three b h n e", three=3, h=self.num_heads
    )
    q = q * (q.shape[-1] ** -0.5)
    logits = jnp.einsum("bhqe,bhke->bhqk", q, k).astype(jnp.float32)
    if key_padding_mask is not None:
      logits = jnp.where(
          key_padding_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min
      )
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bhke->bhqe", weights, v)
    out = einops.rearrange(out, "b h n e -> b n (h e)")
    return nn.Dense(width, kernel_init=_LINEAR_INIT, dtype=self.dtype,
                    name="proj")(out)


class Mlp(nn.Module):
  """Dense(ratio * d) -> exact GELU -> Dense(d)."""

  mlp_ratio: float = _MLP_RATIO_DEFAULT
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = nn.Dense(int(width * self.mlp_ratio), kernel_init=_LINEAR_INIT,
                 dtype=self.dtype, name="fc1")(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(width, kernel_init=_LINEAR_INIT, dtype=self.dtype,
                    name="fc2")(x)


class Block(nn.Module):
  """Pre-LN transformer block: x + DropPath(Attn(LN(x))), x + DropPath(MLP(LN(x)))."""

  num_heads: int
  mlp_ratio: float = _MLP_RATIO_DEFAULT
  drop_path_rate: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self, x: jax.Array, key_padding_mask: jax.Array | None = None, *,
      train: bool,
  ) -> jax.Array:
    drop_path = DropPath(self.drop_path_rate)
    y = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32, name="norm1")(x)
    y = Attention(self.num_heads, self.dtype, name="attn")(y, key_padding_mask)
    x = x + drop_path(y, train=train)
    y = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32, name="norm2")(x)
    y = Mlp(self.mlp_ratio, self.dtype, name="mlp")(y)
    return x + drop_path(y, train=train)


class Encoder(nn.Module):
  """A stack of `depth` blocks with drop-path rates linear in [0, drop_path_rate]."""

  depth: int
  num_heads: int
  mlp_ratio: float = _MLP_RATIO_DEFAULT
  drop_path_rate: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self, x: jax.Array, key_padding_mask: jax.Array | None = None, *,
      train: bool,
  ) -> jax.Array:
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)
    for layer, rate in enumerate(rates):
      x = Block(self.num_heads, self.mlp_ratio, float(rate), self.layer_norm_eps,
                self.dtype, name=f"block_{layer}")(x, key_padding_mask, train=train)
    return x


class TubeletEmbedding(nn.Module):
  """Dense over flattened (t, h, w, c) tubelets, equal to the strided Conv3d."""

  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patches: jax.Array) -> jax.Array:
    """[B, K, s * P * P * C] -> [B, K, d]."""
    kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    return nn.Dense(self.width, kernel_init=kernel_init, dtype=self.dtype,
                    name="proj")(patches)


def _kept_encoder_input(
    embedding: TubeletEmbedding,
    pixels: jax.Array,
    kept_indices: jax.Array | None,
    patch_size: int,
    tubelet_size: int,
) -> jax.Array:
  """Embeds the kept tubelets of `encoder_pixels` and adds their positions: [B, K, d]."""
  patches = patchify(pixels, patch_size, tubelet_size)
  num_tokens = patches.shape[1]
  positions = jnp.asarray(sinusoid_position_table(num_tokens, embedding.width))
  positions = jnp.broadcast_to(positions, (patches.shape[0],) + positions.shape)
  if kept_indices is not None:
    patches = selection.gather_tokens(patches, kept_indices)
    positions = selection.gather_tokens(positions, kept_indices)
  return embedding(patches) + positions.astype(embedding.dtype)


class VideoViT(nn.Module):
  """Video classifier on a kept token subset (VideoMAE fine-tuning model).

  Attributes mirror the fields of `vit_b_config()`; build with `build_classifier`.
  """

  num_classes: int
  patch_size: int = 16
  tubelet_size: int = 2
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = _MLP_RATIO_DEFAULT
  layer_norm_eps: float = 1e-6
  drop_path_rate: float = 0.0
  fc_drop_rate: float = 0.0
  head_init_scale: float = 1e-3
  motion_input: str = "none"
  motion_input_scale: float = 1.0
  input_standardisation: str = "none"
  dtype: Any = jnp.float32

  def encoder_pixels(self, video: jax.Array) -> jax.Array:
    return encoder_pixels(video, self.input_standardisation, self.motion_input,
                          self.motion_input_scale)

  def setup(self):
    self.patch_embed = TubeletEmbedding(self.width, self.dtype)
    self.encoder = Encoder(self.depth, self.num_heads, self.mlp_ratio,
                           self.drop_path_rate, self.layer_norm_eps, self.dtype)
    self.fc_norm = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32)
    self.fc_dropout = nn.Dropout(self.fc_drop_rate)
    self.head = nn.Dense(
        self.num_classes,
        kernel_init=nn.initializers.truncated_normal(0.02 * self.head_init_scale),
    )

  def embed_patches(self, video: jax.Array) -> jax.Array:
    """All tubelet embeddings without positions, [B, N, d] (embedding-space scores)."""
    return self.patch_embed(patchify(self.encoder_pixels(video), self.patch_size,
                                     self.tubelet_size))

  def encoder_input(
      self, video: jax.Array, kept_indices: jax.Array | None = None
  ) -> jax.Array:
    """Kept tokens with their original position embeddings, [B, K, d]."""
    return _kept_encoder_input(self.patch_embed, self.encoder_pixels(video), kept_indices,
                               self.patch_size, self.tubelet_size)

  def __call__(
      self,
      video: jax.Array,
      kept: selection.KeptTokens | None = None,
      *,
      train: bool,
  ) -> jax.Array:
    """Classifies clips from their kept tokens.

    Args:
      video: float [B, T, H, W, C].
      kept: None for all N tokens; else kept indices int [B, K] in raster order and,
        in threshold mode, the key-padding mask bool [B, K].
      train: enables drop path and head dropout (needs the 'dropout' rng).

    Returns:
      float32 logits [B, num_classes].
    """
    indices, valid = (None, None) if kept is None else kept
    tokens = self.encoder_input(video, indices)
    tokens = self.encoder(tokens, valid, train=train)
    pooled = self.fc_norm(masked_mean(tokens.astype(jnp.float32), valid))
    pooled = self.fc_dropout(pooled, deterministic=not train)
    return self.head(pooled)


class VideoMAEPretrainer(nn.Module):
  """VideoMAE masked autoencoder: encoder on visible tokens, light decoder.

  The decoder sees the projected visible tokens plus one shared mask token per masked
  position, each with its position embedding, and predicts the pixels of the masked
  tubelets only. Build with `build_pretrainer`; tube masking comes from
  `masking.tube_mask_indices` at `config.mask_ratio`.
  """

  patch_size: int = 16
  tubelet_size: int = 2
  channels: int = 3
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  decoder_width: int = 384
  decoder_depth: int = 4
  decoder_num_heads: int = 6
  mlp_ratio: float = _MLP_RATIO_DEFAULT
  layer_norm_eps: float = 1e-6
  drop_path_rate: float = 0.0
  motion_input: str = "none"
  motion_input_scale: float = 1.0
  input_standardisation: str = "none"
  dtype: Any = jnp.float32

  def encoder_pixels(self, video: jax.Array) -> jax.Array:
    return encoder_pixels(video, self.input_standardisation, self.motion_input,
                          self.motion_input_scale)

  def setup(self):
    self.patch_embed = TubeletEmbedding(self.width, self.dtype)
    self.encoder = Encoder(self.depth, self.num_heads, self.mlp_ratio,
                           self.drop_path_rate, self.layer_norm_eps, self.dtype)
    self.encoder_norm = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32)
    self.encoder_to_decoder = nn.Dense(
        self.decoder_width, use_bias=False, kernel_init=_LINEAR_INIT,
        dtype=self.dtype)
    self.mask_token = self.param("mask_token", _LINEAR_INIT,
                                 (1, 1, self.decoder_width))
    self.decoder = Encoder(self.decoder_depth, self.decoder_num_heads,
                           self.mlp_ratio, 0.0, self.layer_norm_eps, self.dtype)
    self.decoder_norm = nn.LayerNorm(self.layer_norm_eps, dtype=jnp.float32)
    pixels = self.tubelet_size * self.patch_size**2 * self.channels
    self.decoder_head = nn.Dense(pixels, kernel_init=_LINEAR_INIT,
                                 dtype=self.dtype)

  def __call__(
      self,
      video: jax.Array,
      visible_indices: jax.Array,
      masked_indices: jax.Array,
      *,
      train: bool,
  ) -> jax.Array:
    """Predicts the masked tubelets.

    Args:
      video: float [B, T, H, W, C].
      visible_indices: int [B, V] raster indices the encoder sees.
      masked_indices: int [B, M] the complement (`selection.complement_indices`).
      train: enables drop path.

    Returns:
      float32 [B, M, s * P * P * C] pixel predictions in `patchify` order.
    """
    tokens = _kept_encoder_input(self.patch_embed, self.encoder_pixels(video),
                                 visible_indices, self.patch_size, self.tubelet_size)
    tokens = self.encoder_norm(self.encoder(tokens, train=train))
    visible = self.encoder_to_decoder(tokens)
    num_tokens = visible_indices.shape[1] + masked_indices.shape[1]
    table = jnp.asarray(sinusoid_position_table(num_tokens, self.decoder_width))
    table = jnp.broadcast_to(table, (video.shape[0],) + table.shape)
    visible = visible + selection.gather_tokens(table, visible_indices)
    masked = self.mask_token + selection.gather_tokens(table, masked_indices)
    decoded = self.decoder(
        jnp.concatenate([visible, masked.astype(visible.dtype)], axis=1),
        train=train)
    decoded = self.decoder_norm(decoded[:, visible_indices.shape[1]:])
    return self.decoder_head(decoded).astype(jnp.float32)


def reconstruction_targets(
    video: jax.Array,
    patch_size: int,
    tubelet_size: int = 2,
    normalize: bool = True,
    eps: float = 1e-6,
) -> jax.Array:
  """Per-tubelet pixel targets [B, N, s * P * P * C] in `patchify` order.

  With `normalize`, each tubelet is standardised per channel over its s * P * P
  pixels as VideoMAE's norm_pix target: `(x - mean) / (unbiased std + eps)`. The video
  is assumed in [0, 1] (the batch contract), so no de-normalisation is needed first.
  """
  tubelets = einops.rearrange(
      patchify(video.astype(jnp.float32), patch_size, tubelet_size),
      "b n (k c) -> b n k c", c=video.shape[-1],
  )
  if normalize:
    mean = jnp.mean(tubelets, axis=2, keepdims=True)
    var = jnp.var(tubelets, axis=2, keepdims=True, ddof=1)
    tubelets = (tubelets - mean) / (jnp.sqrt(var) + eps)
  return einops.rearrange(tubelets, "b n k c -> b n (k c)")


def masked_reconstruction_loss(
    predictions: jax.Array, targets: jax.Array, masked_indices: jax.Array
) -> jax.Array:
  """MSE over masked tubelets only.

  Args:
    predictions: [B, M, F] from `VideoMAEPretrainer`.
    targets: [B, N, F] from `reconstruction_targets`.
    masked_indices: int [B, M].

  Returns:
    Scalar mean squared error over the M masked tubelets and F values.
  """
  masked_targets = selection.gather_tokens(targets, masked_indices)
  return jnp.mean(jnp.square(predictions - masked_targets))


def classifier_layer_id(path: tuple[str, ...], depth: int) -> int:
  """Layer id of a `VideoViT` parameter for layer-wise lr decay (VideoMAE's rule).

  'patch_embed' -> 0, 'encoder/block_i' -> i + 1, 'fc_norm' and 'head' -> depth + 1 (the
  position table is fixed, not a parameter). Unknown paths raise ValueError.
  """
  top = path[0] if path else ""
  if top == "patch_embed":
    return 0
  if top == "encoder" and len(path) > 1 and path[1].startswith("block_"):
    return int(path[1][len("block_"):]) + 1
  if top in ("fc_norm", "head"):
    return depth + 1
  raise ValueError(f"No layer id for VideoViT parameter {'/'.join(path)!r}.")


def _module_kwargs(
    config: ml_collections.ConfigDict, module: type[nn.Module]
) -> dict[str, Any]:
  """The config fields that are attributes of `module`."""
  names = {f.name for f in dataclasses.fields(module)} - {"parent", "name"}
  kwargs = {name: config[name] for name in names if name in config}
  kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
  return kwargs


def build_classifier(config: ml_collections.ConfigDict) -> VideoViT:
  """VideoViT from a `vit_*_config()`."""
  return VideoViT(**_module_kwargs(config, VideoViT))


def build_pretrainer(config: ml_collections.ConfigDict) -> VideoMAEPretrainer:
  """VideoMAEPretrainer from a `vit_*_config()` (mask_ratio is the caller's)."""
  return VideoMAEPretrainer(**_module_kwargs(config, VideoMAEPretrainer))
