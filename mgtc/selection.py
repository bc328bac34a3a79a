"""Motion-guided token selection (MGTC) on raw pixels.

Token layout. A clip `video` of shape [B, T, H, W, C] is cut into tubelets of
`tubelet_size` frames x `patch_size` x `patch_size` pixels (default 2 x 16 x 16), the
same sub-blocks the ViT tubelet embedding turns into tokens. Tubelet (t, h, w) covers
frames [s*t, s*t + s), rows [P*h, P*h + P) and columns [P*w, P*w + P), with s the
tubelet size and P the patch size. Tokens are numbered in raster order
n = t * (nh * nw) + h * nw + w, the order of the fixed position table in `vit.py`.
A "slice" is the set of nh * nw tokens that share one t.

Everything here returns *kept indices*: int32 [B, K] raster indices in increasing
order, so the backbone gathers tokens (with their position embeddings already added)
without knowing which rule chose them. The masking baselines in `masking.py` return
the same format.

Decisions taken here (docs/mgtc_reference.md §1, level [R]):
  * Score rule 'consecutive' (default): slice t scores the mean of the s frame
    differences that *end* inside the tubelet, |x[s*t + j] - x[s*t + j - 1]| for
    j = 0..s-1 (for s = 2: |x[2t] - x[2t-1]| and |x[2t+1] - x[2t]|), so it sees motion
    coming into the tubelet and motion within it.
  * Score rule 'rlt' (RLT parity): |x[s*t + s - 1] - x[s*(t-1)]|, the last frame of
    slice t minus the first frame of slice t - 1.
  * Both rules mean-pool the absolute difference over the P x P patch and the colour
    channels, on the exact tensor the tokens are cut from.
  * The first slice has no predecessor: it is the I-frame, scored +inf, always kept.
  * Ratio mode keeps the N - k highest scores, k = floor(r * N); a budget that would
    reach into the first slice is an error rather than a silent cap, so a config never
    runs at a different ratio than it says.
  * Ties (static regions, letterbox borders, erased rectangles) go to the lower raster
    index (`jax.lax.top_k` is documented to prefer the lower index), so a static clip
    keeps the first slice and then fills its budget slice by slice in raster order.
"""
from collections.abc import Sequence
import fractions
import math
from typing import NamedTuple

import einops
import jax
import jax.numpy as jnp
import numpy as np

SCORE_RULES = ("consecutive", "rlt")
APPLY_AT = ("train", "test", "both", "none")


class TokenGrid(NamedTuple):
  """Token grid of a clip: `slices` x `height` x `width` tubelets."""

  slices: int
  height: int
  width: int

  @property
  def tokens_per_slice(self) -> int:
    return self.height * self.width

  @property
  def num_tokens(self) -> int:
    return self.slices * self.height * self.width


class KeptTokens(NamedTuple):
  """Which tokens enter the encoder.

  Attributes:
    indices: int32 [B, K] raster indices in increasing order (padding, if any, last).
    valid: bool [B, K] key-padding mask (True = real token), or None when every row
      keeps exactly K tokens (ratio mode and all baselines).
  """

  indices: jax.Array
  valid: jax.Array | None = None


def token_grid(
    video_shape: Sequence[int], patch_size: int, tubelet_size: int = 2
) -> TokenGrid:
  """Returns the token grid of a [..., T, H, W, C] clip.

  Raises:
    ValueError: if T is not divisible by `tubelet_size` or H, W by `patch_size`.
  """
  num_frames, height, width = video_shape[-4:-1]
  if num_frames % tubelet_size:
    raise ValueError(
        f"num_frames={num_frames} is not divisible by tubelet_size={tubelet_size}."
    )
  if height % patch_size or width % patch_size:
    raise ValueError(
        f"frame size {height}x{width} is not divisible by patch_size={patch_size}."
    )
  return TokenGrid(num_frames // tubelet_size, height // patch_size,
                   width // patch_size)


def is_selection_active(apply_at: str, train: bool) -> bool:
  """Whether token dropping runs in this mode.

  Args:
    apply_at: 'both' (train and test; the likely headline setting), 'test'
      (training-free: train on all tokens, drop at inference), 'train' (drop in
      training only) or 'none'.
    train: True in the training step, False in evaluation.
  """
  if apply_at not in APPLY_AT:
    raise ValueError(f"apply_at={apply_at!r} is not one of {APPLY_AT}.")
  return apply_at == "both" or apply_at == ("train" if train else "test")


def num_tokens_to_drop(
    num_tokens: int, drop_ratio: float, protected_tokens: int = 0
) -> int:
  """Returns k = floor(r * N), checked against the protected first slice.

  The ratio is read as the decimal it is written as (0.29 * 100 gives 29, not the
  28 that float rounding would give).

  Args:
    num_tokens: N, tokens per clip.
    drop_ratio: r in [0, 1).
    protected_tokens: tokens that must survive (the first slice for MGTC).

  Raises:
    ValueError: if r is outside [0, 1) or k > N - protected_tokens.
  """
  if not 0.0 <= drop_ratio < 1.0:
    raise ValueError(f"drop_ratio={drop_ratio} is outside [0, 1).")
  num_drop = math.floor(fractions.Fraction(repr(float(drop_ratio))) * num_tokens)
  if num_drop > num_tokens - protected_tokens:
    raise ValueError(
        f"drop_ratio={drop_ratio} drops {num_drop} of {num_tokens} tokens, more "
        f"than the {num_tokens - protected_tokens} outside the first slice; use "
        f"drop_ratio <= {(num_tokens - protected_tokens) / num_tokens:.4f}."
    )
  return num_drop


def _pool_patches(frames: jax.Array, patch_size: int) -> jax.Array:
  """Mean over each P x P patch and the channels: [B, F, H, W, C] -> [B, F, h, w]."""
  return einops.reduce(
      frames, "b f (h p) (w q) c -> b f h w", "mean", p=patch_size, q=patch_size
  )


def motion_scores(
    video: jax.Array,
    patch_size: int = 16,
    tubelet_size: int = 2,
    rule: str = "consecutive",
) -> jax.Array:
  """Per-token motion score from raw pixels (see the module docstring for rules).

  Args:
    video: float [B, T, H, W, C], the exact tensor the tokens are cut from. Units
      only matter for threshold mode; ratio mode is invariant to a global scale.
    patch_size: P.
    tubelet_size: s, frames per token.
    rule: 'consecutive' (default) or 'rlt'.

  Returns:
    float32 [B, T/s, H/P, W/P]; the first slice is +inf.
  """
  token_grid(video.shape, patch_size, tubelet_size)  # Validates the shape.
  video = video.astype(jnp.float32)
  if rule == "consecutive":
    # diffs[f] = |x[f] - x[f-1]| for f >= 1; frame 0 has none, and its slice is +inf.
    diffs = jnp.abs(video[:, 1:] - video[:, :-1])
    diffs = jnp.pad(diffs, ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))
    per_frame = _pool_patches(diffs, patch_size)
    scores = einops.reduce(
        per_frame, "b (t s) h w -> b t h w", "mean", s=tubelet_size
    )
  elif rule == "rlt":
    last_frames = video[:, tubelet_size - 1 :: tubelet_size]
    first_frames = video[:, ::tubelet_size]
    diffs = jnp.abs(last_frames[:, 1:] - first_frames[:, :-1])
    scores = _pool_patches(diffs, patch_size)
    scores = jnp.pad(scores, ((0, 0), (1, 0), (0, 0), (0, 0)))
  else:
    raise ValueError(f"rule={rule!r} is not one of {SCORE_RULES}.")
  return scores.at[:, 0].set(jnp.inf)


def select_top_tokens(scores: jax.Array, num_keep: int) -> jax.Array:
  """Keeps the `num_keep` highest-scoring tokens, returned in raster order.

  Args:
    scores: float [B, N]; ties go to the lower index.
    num_keep: K, static.

  Returns:
    int32 [B, K] strictly increasing indices.
  """
  _, indices = jax.lax.top_k(scores, num_keep)
  return jnp.sort(indices, axis=-1).astype(jnp.int32)


def select_tokens_by_ratio(
    scores: jax.Array, drop_ratio: float, tokens_per_slice: int
) -> jax.Array:
  """Ratio mode: drops the k = floor(r * N) lowest scores of each clip.

  This is a per-video threshold at the r-quantile with a static keep count, so one
  compiled program serves each (frames, ratio).

  Args:
    scores: float [B, t, h, w] or [B, N] from `motion_scores` (first slice +inf).
    drop_ratio: r in [0, 1).
    tokens_per_slice: h * w; the first slice must survive.

  Returns:
    int32 [B, N - k] kept indices in raster order.

  Raises:
    ValueError: bad ratio, or a budget that reaches into the first slice.
  """
  scores = scores.reshape(scores.shape[0], -1)
  num_tokens = scores.shape[1]
  num_drop = num_tokens_to_drop(num_tokens, drop_ratio, tokens_per_slice)
  return select_top_tokens(scores, num_tokens - num_drop)


def motion_guided_indices(
    video: jax.Array,
    drop_ratio: float,
    patch_size: int = 16,
    tubelet_size: int = 2,
    rule: str = "consecutive",
) -> jax.Array:
  """MGTC ratio mode end to end: pixels -> int32 [B, N - floor(r * N)] kept indices."""
  grid = token_grid(video.shape, patch_size, tubelet_size)
  scores = motion_scores(video, patch_size, tubelet_size, rule)
  return select_tokens_by_ratio(scores, drop_ratio, grid.tokens_per_slice)


def threshold_keep_counts(scores: jax.Array, threshold: float) -> jax.Array:
  """Threshold mode: int32 [B] number of tokens with score > threshold.

  RLT drops a token when its score is <= tau; the +inf first slice always survives.
  """
  scores = scores.reshape(scores.shape[0], -1)
  return jnp.sum(scores > threshold, axis=-1, dtype=jnp.int32)


def select_tokens_by_threshold(
    scores: jax.Array, threshold: float, padded_length: int
) -> KeptTokens:
  """Threshold (RLT-style absolute tau) mode with padding to a static length.

  The number of tokens above tau differs per clip, but a jitted step needs one shape, so
  the trainer pads to L = N: correct, with no compute saved. A shorter L (e.g. the
  batch's largest keep count, read on the host) would save compute at the price of one
  compilation per distinct L; the trainer does not do that.

  Args:
    scores: float [B, t, h, w] or [B, N]; the units of `threshold` are those of the
      video the scores came from (RLT's tau = 0.1 is in ImageNet-normalised units).
    threshold: tau; tokens with score > tau are kept.
    padded_length: L, static. Must be >= every clip's keep count, otherwise the
      highest raster indices of the longest clips are cut.

  Returns:
    KeptTokens with indices int32 [B, L] (kept tokens in raster order, then padding
    pointing at token 0) and valid bool [B, L].
  """
  scores = scores.reshape(scores.shape[0], -1)
  num_tokens = scores.shape[1]
  positions = jnp.arange(num_tokens, dtype=jnp.int32)
  # Kept tokens sort first in raster order; dropped ones follow, offset by N.
  sort_key = jnp.where(scores > threshold, positions, positions + num_tokens)
  sort_key = jnp.sort(sort_key, axis=-1)[:, :padded_length]
  valid = sort_key < num_tokens
  return KeptTokens(jnp.where(valid, sort_key, 0), valid)


def complement_indices(kept_indices: jax.Array, num_tokens: int) -> jax.Array:
  """Raster-ordered indices not in `kept_indices`: int32 [B, K] -> [B, N - K]."""
  batch, num_kept = kept_indices.shape
  is_kept = jnp.zeros((batch, num_tokens), bool)
  is_kept = is_kept.at[jnp.arange(batch)[:, None], kept_indices].set(True)
  positions = jnp.arange(num_tokens, dtype=jnp.int32)
  sort_key = jnp.where(is_kept, positions + num_tokens, positions)
  return jnp.sort(sort_key, axis=-1)[:, : num_tokens - num_kept]


def gather_tokens(tokens: jax.Array, indices: jax.Array) -> jax.Array:
  """Gathers tokens by index: [B, N, ...] x int [B, K] -> [B, K, ...]."""
  return jnp.take_along_axis(
      tokens, indices.reshape(indices.shape + (1,) * (tokens.ndim - 2)), axis=1
  )


def add_positions_and_gather(
    tokens: jax.Array, position_table: jax.Array | np.ndarray, indices: jax.Array
) -> jax.Array:
  """Adds the position table to all tokens, then gathers the kept ones.

  Adding before the gather is what keeps each kept token at its original position
  embedding; re-numbering the kept tokens would silently break pretrained weights.

  Args:
    tokens: [B, N, D] embedded tokens.
    position_table: [N, D].
    indices: int [B, K] kept raster indices.

  Returns:
    [B, K, D].
  """
  return gather_tokens(tokens + position_table[None].astype(tokens.dtype), indices)
