"""Token-dropping baselines at MGTC's token count, and one dispatcher for all rules.

Every rule returns int32 [B, K] kept raster indices in increasing order (the format of
`selection.py`), so the ViT never knows which rule chose its tokens. K equals MGTC's
N - floor(r * N) whenever r * N (tube masking: r * h * w) is an integer, which holds
for the paper's ratios on the 14 x 14 grid.

Baselines (docs/mgtc_reference.md §3):
  * random: drop a uniformly random k = floor(r * N) tokens per clip.
  * tube (VideoMAE): one random spatial mask of floor(r * h * w) positions, repeated on
    every temporal slice.
  * running_cell (MAR / VideoMAE V2): 2 x 2 cells, each masking m = 4r of its 4
    positions with a queue that rotates one step per slice.
  * embedding (EVEREST-like ablation): the MGTC top-k rule scored by the L2 distance
    between patch embeddings of the same (h, w) in adjacent slices.

Decisions taken here (level [R]):
  * Random rules draw fresh noise from the caller's key in training and use
    `jax.random.key(test_seed)` in evaluation, so test masks are reproducible across
    runs; rows of one eval batch still get different masks.
  * Running cell: the position j = 2 * (h mod 2) + (w mod 2) of a cell is masked on
    slice t iff queue[(j + phase + t) mod 4] = 1, with queue = [1] * m + [0] * (4 - m).
    Test uses phase 0 (pattern t mod 4); training draws one phase per clip and, with
    `shuffle_slices`, permutes the per-slice patterns (MAR's K400/SSv2 option).
  * Embedding scores use the patch embeddings before the position table is added
    (the table would add a position-dependent offset to every difference) and do not
    protect the first slice: like EVEREST, slice 0 competes with its 0 -> 1 distance.
"""
import fractions

import einops
import jax
import jax.numpy as jnp
import ml_collections

from mgtc import selection

METHODS = (
    "none", "mgtc", "mgtc_threshold", "random", "tube", "running_cell", "embedding"
)
RUNNING_CELL_RATIOS = (0.25, 0.5, 0.75)


def token_drop_config() -> ml_collections.ConfigDict:
  """Default config of `kept_token_indices` (MGTC ratio mode, 25%, train and test)."""
  config = ml_collections.ConfigDict()
  config.method = "mgtc"  # One of METHODS.
  config.drop_ratio = 0.25  # r in [0, 1); ignored by 'none' and 'mgtc_threshold'.
  config.apply_at = "both"  # 'train' | 'test' | 'both' | 'none'.
  config.score_rule = "consecutive"  # 'consecutive' | 'rlt' (pixel scores only).
  config.threshold = 0.1  # tau for 'mgtc_threshold', in the units of the video.
  config.test_seed = 0  # Key of the random rules in evaluation.
  config.running_cell_shuffle = False  # Permute per-slice cell patterns in training.
  return config


def random_token_indices(
    rng: jax.Array, batch_size: int, num_tokens: int, drop_ratio: float
) -> jax.Array:
  """Random token drop: int32 [B, N - floor(r * N)], a new draw per clip."""
  num_drop = selection.num_tokens_to_drop(num_tokens, drop_ratio)
  noise = jax.random.uniform(rng, (batch_size, num_tokens))
  return selection.select_top_tokens(noise, num_tokens - num_drop)


def tube_mask_indices(
    rng: jax.Array,
    batch_size: int,
    grid: selection.TokenGrid,
    drop_ratio: float,
) -> jax.Array:
  """VideoMAE tube masking: one spatial mask per clip, repeated over time.

  Args:
    rng: key; one spatial mask is drawn per clip.
    batch_size: B.
    grid: token grid (t, h, w).
    drop_ratio: r in [0, 1); floor(r * h * w) positions are masked per slice.

  Returns:
    int32 [B, t * (h * w - floor(r * h * w))] kept indices in raster order.
  """
  spatial = grid.tokens_per_slice
  num_drop = selection.num_tokens_to_drop(spatial, drop_ratio)
  noise = jax.random.uniform(rng, (batch_size, spatial))
  kept_spatial = selection.select_top_tokens(noise, spatial - num_drop)
  slice_offsets = jnp.arange(grid.slices, dtype=jnp.int32) * spatial
  indices = slice_offsets[None, :, None] + kept_spatial[:, None, :]
  return einops.rearrange(indices, "b t k -> b (t k)")


def tube_visible_and_masked(
    rng: jax.Array,
    batch_size: int,
    grid: selection.TokenGrid,
    mask_ratio: float,
) -> tuple[jax.Array, jax.Array]:
  """Tube masking split for MAE pretraining (`vit.VideoMAEPretrainer`).

  Returns:
    (visible, masked): int32 [B, V] and [B, N - V] raster indices, V = t * (h * w -
    floor(r * h * w)); at 90% on 8 x 14 x 14 that is 160 visible of 1,568.
  """
  visible = tube_mask_indices(rng, batch_size, grid, mask_ratio)
  return visible, selection.complement_indices(visible, grid.num_tokens)


def _cell_masks_per_cell(drop_ratio: float) -> int:
  """m = 4r masked positions per 2 x 2 cell; only 25 / 50 / 75% are defined."""
  masked = fractions.Fraction(repr(float(drop_ratio))) * 4
  if masked.denominator != 1 or not 0 < masked < 4:
    raise ValueError(
        f"drop_ratio={drop_ratio} is not a running-cell ratio; supported: "
        f"{RUNNING_CELL_RATIOS}."
    )
  return int(masked)


def running_cell_mask(
    grid: selection.TokenGrid, drop_ratio: float, phase: jax.Array,
    slice_order: jax.Array | None = None,
) -> jax.Array:
  """Running-cell mask pattern (True = masked).

  Args:
    grid: token grid; h and w must be even.
    drop_ratio: 0.25, 0.5 or 0.75.
    phase: int [B] starting phase in [0, 4).
    slice_order: optional int [B, t]; slice t uses the pattern of step slice_order[t].

  Returns:
    bool [B, t, h, w].
  """
  num_masked = _cell_masks_per_cell(drop_ratio)
  if grid.height % 2 or grid.width % 2:
    raise ValueError(
        f"token grid {grid.height}x{grid.width} is not tiled by 2x2 cells."
    )
  queue = jnp.arange(4) < num_masked
  rows = jnp.arange(grid.height) % 2
  cols = jnp.arange(grid.width) % 2
  cell_position = 2 * rows[:, None] + cols[None, :]
  if slice_order is None:
    slice_order = jnp.broadcast_to(
        jnp.arange(grid.slices), (phase.shape[0], grid.slices)
    )
  step = phase[:, None] + slice_order
  return queue[(cell_position[None, None] + step[:, :, None, None]) % 4]


def mask_to_kept_indices(masked: jax.Array, num_keep: int) -> jax.Array:
  """bool [B, ...] with exactly `num_keep` False per row -> int32 [B, num_keep]."""
  visible = jnp.logical_not(masked.reshape(masked.shape[0], -1))
  return selection.select_top_tokens(visible.astype(jnp.float32), num_keep)


def running_cell_indices(
    batch_size: int,
    grid: selection.TokenGrid,
    drop_ratio: float,
    rng: jax.Array | None = None,
    shuffle_slices: bool = False,
) -> jax.Array:
  """Running-cell masking (MAR), same kept-index format.

  Args:
    batch_size: B.
    grid: token grid; h and w even.
    drop_ratio: 0.25, 0.5 or 0.75.
    rng: None at test (phase 0, pattern t mod 4); in training a key for one random
      phase per clip (and the slice permutation when `shuffle_slices`).
    shuffle_slices: permute the order of the per-slice patterns (training only).

  Returns:
    int32 [B, N * (1 - r)] kept indices in raster order.
  """
  num_masked = _cell_masks_per_cell(drop_ratio)
  if rng is None:
    phase = jnp.zeros((batch_size,), jnp.int32)
    slice_order = None
  else:
    phase_rng, shuffle_rng = jax.random.split(rng)
    phase = jax.random.randint(phase_rng, (batch_size,), 0, 4)
    slice_order = None
    if shuffle_slices:
      order_rngs = jax.random.split(shuffle_rng, batch_size)
      slice_order = jax.vmap(
          lambda key: jax.random.permutation(key, grid.slices)
      )(order_rngs)
  masked = running_cell_mask(grid, drop_ratio, phase, slice_order)
  num_keep = grid.num_tokens * (4 - num_masked) // 4
  return mask_to_kept_indices(masked, num_keep)


def embedding_motion_scores(
    patch_embeddings: jax.Array, grid: selection.TokenGrid
) -> jax.Array:
  """EVEREST-like score: L2 distance to the same (h, w) in the adjacent slice.

  Args:
    patch_embeddings: [B, N, D] tubelet embeddings in raster order, before positions.
    grid: token grid with at least 2 slices.

  Returns:
    float32 [B, t, h, w]; slice t >= 1 scores ||e[t] - e[t-1]||, slice 0 reuses the
    slice 0 -> 1 distance.
  """
  if grid.slices < 2:
    raise ValueError(
        f"embedding scores need >= 2 temporal slices, got slices={grid.slices}."
    )
  embeddings = einops.rearrange(
      patch_embeddings.astype(jnp.float32), "b (t h w) d -> b t h w d",
      t=grid.slices, h=grid.height, w=grid.width,
  )
  distances = jnp.linalg.norm(embeddings[:, 1:] - embeddings[:, :-1], axis=-1)
  return jnp.concatenate([distances[:, :1], distances], axis=1)


def embedding_guided_indices(
    patch_embeddings: jax.Array, grid: selection.TokenGrid, drop_ratio: float
) -> jax.Array:
  """Embedding-space top-k: int32 [B, N - floor(r * N)] kept indices."""
  scores = embedding_motion_scores(patch_embeddings, grid)
  scores = scores.reshape(scores.shape[0], -1)
  num_drop = selection.num_tokens_to_drop(grid.num_tokens, drop_ratio)
  return selection.select_top_tokens(scores, grid.num_tokens - num_drop)


def kept_token_indices(
    config: ml_collections.ConfigDict,
    video: jax.Array,
    *,
    patch_size: int,
    tubelet_size: int = 2,
    train: bool,
    rng: jax.Array | None = None,
    patch_embeddings: jax.Array | None = None,
    padded_length: int | None = None,
) -> selection.KeptTokens | None:
  """Chooses the encoder's tokens with the rule named in `config.method`.

  Jittable; `config`, `train`, `patch_size`, `tubelet_size` and `padded_length` are
  static.

  Args:
    config: see `token_drop_config`.
    video: float [B, T, H, W, C], the tensor the tokens are cut from.
    patch_size: P of the backbone.
    tubelet_size: frames per token.
    train: training step (True) or evaluation (False); with `config.apply_at` it
      decides whether anything is dropped.
    rng: key for the random rules in training.
    patch_embeddings: [B, N, D] (method 'embedding' only), e.g. from
      `VideoViT.embed_patches`.
    padded_length: static L for 'mgtc_threshold' (see
      `selection.select_tokens_by_threshold`); None pads to N, which is correct but
      saves no compute.

  Returns:
    None when every token is used, else KeptTokens (valid is set only by
    'mgtc_threshold').
  """
  if config.method not in METHODS:
    raise ValueError(f"method={config.method!r} is not one of {METHODS}.")
  if config.method == "none" or not selection.is_selection_active(
      config.apply_at, train
  ):
    return None
  grid = selection.token_grid(video.shape, patch_size, tubelet_size)
  batch_size = video.shape[0]
  if train and config.method in ("random", "tube", "running_cell") and rng is None:
    raise ValueError(f"method={config.method!r} needs an rng in training.")
  if not train:
    rng = jax.random.key(config.test_seed)
  if config.method == "mgtc":
    return selection.KeptTokens(selection.motion_guided_indices(
        video, config.drop_ratio, patch_size, tubelet_size, config.score_rule))
  if config.method == "mgtc_threshold":
    scores = selection.motion_scores(
        video, patch_size, tubelet_size, config.score_rule)
    return selection.select_tokens_by_threshold(
        scores, config.threshold, padded_length or grid.num_tokens)
  if config.method == "random":
    return selection.KeptTokens(random_token_indices(
        rng, batch_size, grid.num_tokens, config.drop_ratio))
  if config.method == "tube":
    return selection.KeptTokens(
        tube_mask_indices(rng, batch_size, grid, config.drop_ratio))
  if config.method == "running_cell":
    return selection.KeptTokens(running_cell_indices(
        batch_size, grid, config.drop_ratio, rng if train else None,
        config.running_cell_shuffle and train))
  if patch_embeddings is None:
    raise ValueError("method='embedding' needs patch_embeddings.")
  return selection.KeptTokens(
      embedding_guided_indices(patch_embeddings, grid, config.drop_ratio))
