"""Where MooG's state tokens look: attention maps, centroid tracks and a consistency score.

The corrector's cross-attention lets each state token read the encoder grid of the
current frame. Its weights, `[*b, T, heads, n, N_enc]` with `N_enc = h * w` (row-major
grid, as the encoder flattens it), say where on the frame each token looks. This module
turns them into

* `attention_maps`: `[*b, T, n, h, w]`, the weights averaged over heads;
* `attention_centroids`: `[*b, T, n, 2]`, the attention-weighted mean (y, x) of the grid
  cell centres, in pixel units of the frame (pixel `p` covers `[p, p + 1)`, so a cell of
  an `s`-strided grid at row `i` is centred at `(i + 0.5) * s`);
* `decoder_responsibility_maps`: `[*b, T, n, H, W]`, the decoder's cross-attention
  turned token-major: the share of each pixel that each token renders;
* `attention_point_tracks`: a parameter-free point tracker that moves each query with
  the centroids of the tokens whose maps (either kind) cover it;
* `token_consistency`: for the tokens that attend to one ground-truth segment clearly
  more than uniformly at frame 0, how consistently they keep looking at it over time
  (see that function for the definition);
* `draw_tracks` / `trajectory_video`: the centroid tracks drawn over the frames (host
  side, numpy + PIL), for `moog.visualize` and the eval-time TensorBoard clips.

All jnp functions are pure and jittable (`num_segments` must be static).
"""

import colorsys

import einops
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int
import numpy as np
from PIL import Image
from PIL import ImageDraw

DOT_RADIUS = 3


def _cross_attention_weights(transformer: dict, layer: int) -> jax.Array:
  """The sown cross-attention weights of block `layer` (Python indexing) of a Transformer."""
  blocks = sorted((name for name in transformer if name.startswith('block_')),
                  key=lambda name: int(name.removeprefix('block_')))
  (weights,) = transformer[blocks[layer]]['cross_attention']['attention_weights']
  return weights


def corrector_cross_attention(
    intermediates: dict, layer: int = -1
) -> Float[Array, 'b T heads n N']:
  """The corrector's cross-attention weights from MooG's sown intermediates.

  Args:
    intermediates: `variables['intermediates']` of `MooG.apply(..., mutable=
      ['intermediates'])` on a batched video `[b, T, H, W, 3]`.
    layer: which corrector block; the default is the last one.

  Returns:
    `[b, T, heads, n, N_enc]` weights (the scan stacks them time-major; moved here to
    batch-major).
  """
  weights = _cross_attention_weights(intermediates['corrector'], layer)
  return einops.rearrange(weights, 't b heads n k -> b t heads n k')


def attention_maps(
    cross_attention: Float[Array, '*b T heads n N'], grid_shape: tuple[int, int]
) -> Float[Array, '*b T n h w']:
  """Per-token attention over the encoder grid, averaged over heads.

  Args:
    cross_attention: corrector cross-attention weights; `N = h * w`, row-major.
    grid_shape: the encoder grid `(h, w)`.

  Returns:
    `[*b, T, n, h, w]`; each map sums to 1 (unless all keys were masked).
  """
  height, width = grid_shape
  mean_over_heads = jnp.mean(cross_attention, axis=-3)
  return einops.rearrange(mean_over_heads, '... n (h w) -> ... n h w', h=height, w=width)


def attention_centroids(
    maps: Float[Array, '*b n h w'], frame_shape: tuple[int, int]
) -> Float[Array, '*b n 2']:
  """Attention-weighted centroid (y, x) of each map, in pixel units of the frame.

  Args:
    maps: attention maps over an `h x w` grid (any leading axes), each summing to 1.
    frame_shape: `(H, W)` of the frame the grid covers; cell `(i, j)` is centred at
      `((i + 0.5) * H / h, (j + 0.5) * W / w)`.

  Returns:
    `[*b, n, 2]` centroids; a map that sums to 0 gives (0, 0).
  """
  grid_h, grid_w = maps.shape[-2:]
  frame_h, frame_w = frame_shape
  cell_y = (jnp.arange(grid_h) + 0.5) * (frame_h / grid_h)
  cell_x = (jnp.arange(grid_w) + 0.5) * (frame_w / grid_w)
  centroid_y = jnp.einsum('...hw,h->...', maps, cell_y)
  centroid_x = jnp.einsum('...hw,w->...', maps, cell_x)
  return jnp.stack([centroid_y, centroid_x], axis=-1)


def decoder_responsibility_maps(
    intermediates: dict, frame_shape: tuple[int, int], layer: int = -1
) -> Float[Array, '*b T n H W']:
  """Which state token renders each pixel: the decoder's cross-attention, token-major.

  Every query pixel of the decoder attends over the state tokens, so for each pixel the
  weights (averaged over heads) sum to 1 over the tokens, like slot-attention masks.
  Token `i`'s map is then the share of every pixel that it renders.

  Args:
    intermediates: `variables['intermediates']` of a `mutable=['intermediates']`
      `MooG.decode_frame` apply on states `[*b, T, n, d]` at `frame_shape`.
    frame_shape: `(H, W)` the frame was decoded at (its pixel grid is the map's grid).
    layer: which decoder block; the default is the last one.

  Returns:
    `[*b, T, n, H, W]`.
  """
  weights = _cross_attention_weights(intermediates['decoder']['transformer'], layer)
  height, width = frame_shape
  mean_over_heads = jnp.mean(weights, axis=-3)  # [*b, T, H * W pixels, n].
  return einops.rearrange(mean_over_heads, '... (h w) n -> ... n h w', h=height, w=width)


def attention_point_tracks(
    maps: Float[Array, 'b T n h w'],
    frame_shape: tuple[int, int],
    query_yx: Float[Array, 'b Q 2'],
    *,
    reference_frame: int = 1,
    power: float = 1.0,
) -> Float[Array, 'b Q T 2']:
  """Point tracks that move with the tokens whose attention maps cover each query.

  A parameter-free readout: query q is assigned to the state tokens by their maps at q's
  grid cell on `reference_frame`, with weights ∝ map ** `power` normalised over tokens;
  its position at frame t ≥ `reference_frame` is q plus the weighted displacement of
  those tokens' map centroids since `reference_frame`, and q before it. A query whose
  cell no token covers stays put. If tokens move with their content, so do the points.

  The maps can be the corrector's (`attention_maps`: where each token looks on the
  encoder grid) or the decoder's (`decoder_responsibility_maps`: which pixels each token
  renders, on the pixel grid). Each token's map is normalised to sum 1 before its
  centroid is taken (corrector maps already do).

  Args:
    maps: per-token maps over an `h x w` grid covering the frame.
    frame_shape: `(H, W)` of the frames.
    query_yx: (y, x) query positions in raster pixels of the frame.
    reference_frame: frame whose maps assign queries to tokens.
    power: sharpening of the weights (large: the single most-covering token).

  Returns:
    `[b, Q, T, 2]` (x, y) raster positions, the layout of TAP-Vid predictions.
  """
  grid_shape = maps.shape[-2:]
  mass = jnp.sum(maps, axis=(-2, -1), keepdims=True)
  normalised = maps / jnp.where(mass > 0, mass, 1.0)
  centroids = attention_centroids(normalised, frame_shape)  # [b, T, n, (y, x)]
  cell = jnp.floor(query_yx * jnp.asarray(grid_shape) / jnp.asarray(frame_shape))
  cell = jnp.clip(cell.astype(jnp.int32), 0, jnp.asarray(grid_shape) - 1)
  at_query = jax.vmap(lambda m, y, x: m[:, y, x].T)(
      maps[:, reference_frame], cell[..., 0], cell[..., 1])  # [b, Q, n]
  weights = at_query**power
  total = jnp.sum(weights, axis=-1, keepdims=True)
  # A cell no token covers leaves its queries where they are (not 0 / 0).
  weights = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 0.0)
  moved = centroids - centroids[:, reference_frame : reference_frame + 1]
  moved = moved.at[:, :reference_frame].set(0.0)
  displacement = jnp.einsum('bqn,btnc->bqtc', weights, moved)
  return (query_yx[:, :, None] + displacement)[..., ::-1]


def segment_attention_mass(
    maps: Float[Array, '*b T n h w'],
    segmentations: Int[Array, '*b T H W'],
    num_segments: int,
) -> Float[Array, '*b T n K']:
  """Attention mass each token puts on each ground-truth segment, per frame.

  A grid cell's weight is spread uniformly over the pixels it covers, so the mass on
  segment k is `sum_cells weight(cell) * fraction of the cell's pixels in segment k`.

  Args:
    maps: attention maps over the `h x w` encoder grid.
    segmentations: per-pixel segment ids in `[0, num_segments)` (0 is MOVi's
      background); `H, W` must be multiples of `h, w`.
    num_segments: K, static.

  Returns:
    `[*b, T, n, K]` masses; they sum to each map's total (1).
  """
  grid_h, grid_w = maps.shape[-2:]
  frame_h, frame_w = segmentations.shape[-2:]
  if frame_h % grid_h or frame_w % grid_w:
    raise ValueError(
        f'Segmentation {frame_h}x{frame_w} is not a multiple of the grid {grid_h}x{grid_w}.'
    )
  one_hot = jax.nn.one_hot(segmentations, num_segments, dtype=maps.dtype)
  cell_fractions = einops.reduce(
      one_hot, '... (h sy) (w sx) k -> ... h w k', 'mean', h=grid_h, w=grid_w
  )
  return jnp.einsum('...nhw,...hwk->...nk', maps, cell_fractions)


def segment_areas(
    segmentations: Int[Array, '*b T H W'], num_segments: int
) -> Float[Array, '*b T K']:
  """Fraction of each frame's pixels in each segment."""
  one_hot = jax.nn.one_hot(segmentations, num_segments, dtype=jnp.float32)
  return jnp.mean(one_hot, axis=(-3, -2))


def token_consistency(
    maps: Float[Array, '*b T n h w'],
    segmentations: Int[Array, '*b T H W'],
    num_segments: int,
    min_lift: float = 2.0,
) -> dict[str, Float[Array, '...']]:
  """How consistently each token keeps its attention on one ground-truth segment.

  Definition. A token's *lift* on segment k in frame t is its attention mass on k divided
  by k's share of the frame's pixels (1 everywhere for uniform attention; 0 for a
  segment absent from the frame). A token is *bound* if its largest lift at frame 0 is
  at least `min_lift`; its segment is that argmax (background is a segment like any
  other). A bound token's score is the fraction of frames 1..T-1 in which the same
  segment still has its largest lift: 1 for a token that follows its object, the
  fraction of frames before the object left for one that stays put. The summary is the
  mean score over bound tokens (NaN if none) next to the fraction of tokens that are
  bound; an untrained model, whose attention is near-uniform, binds no token rather
  than scoring a spurious 1.

  Args:
    maps: attention maps, `T >= 2`.
    segmentations: per-pixel segment ids in `[0, num_segments)`.
    num_segments: K, static (e.g. `max id + 1`).
    min_lift: how much more than uniform a token must attend to a segment at frame 0.

  Returns:
    `per_token` `[*b, n]` scores in [0, 1] (also for unbound tokens), `bound` `[*b, n]`
    bool, and the scalars `consistency` (mean over bound tokens) and `bound_fraction`.
  """
  if maps.shape[-4] < 2:
    raise ValueError(f'token_consistency needs at least 2 frames, got {maps.shape[-4]}.')
  mass = segment_attention_mass(maps, segmentations, num_segments)  # [*b, T, n, K]
  areas = segment_areas(segmentations, num_segments)[..., None, :]  # [*b, T, 1, K]
  lift = jnp.where(areas > 0, mass / jnp.where(areas > 0, areas, 1.0), 0.0)
  best_segment = jnp.argmax(lift, axis=-1)  # [*b, T, n]
  stays = best_segment[..., 1:, :] == best_segment[..., :1, :]
  per_token = jnp.mean(stays.astype(jnp.float32), axis=-2)
  bound = jnp.max(lift[..., 0, :, :], axis=-1) >= min_lift
  num_bound = jnp.sum(bound)
  consistency = jnp.where(
      num_bound > 0, jnp.sum(jnp.where(bound, per_token, 0.0)) / jnp.maximum(num_bound, 1),
      jnp.nan)
  return dict(per_token=per_token, bound=bound, consistency=consistency,
              bound_fraction=jnp.mean(bound.astype(jnp.float32)))


def token_colours(num_tokens: int) -> list[tuple[int, int, int]]:
  """Evenly spaced saturated hues, one RGB colour per token."""
  return [
      tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / num_tokens, 0.9, 1.0))
      for i in range(num_tokens)
  ]


def draw_tracks(
    frame: np.ndarray, tracks: np.ndarray, scale: int, colours: list[tuple[int, int, int]]
) -> np.ndarray:
  """Draws token trails and current positions over an upscaled frame.

  Args:
    frame: `[H, W, 3]` uint8 frame.
    tracks: `[t, k, 2]` centroids (y, x) in frame pixel units for frames 0..t-1; the
      last one is the current position.
    scale: integer upscaling factor of the drawing.
    colours: one RGB colour per track.

  Returns:
    `[H * scale, W * scale, 3]` uint8 image.
  """
  height, width = frame.shape[:2]
  image = Image.fromarray(frame).resize((width * scale, height * scale), Image.NEAREST)
  draw = ImageDraw.Draw(image)
  points = tracks[..., ::-1] * scale  # (x, y) for PIL.
  for token, colour in enumerate(colours):
    trail = [tuple(p) for p in points[:, token].tolist()]
    if len(trail) > 1:
      draw.line(trail, fill=colour, width=1)
    x, y = trail[-1]
    draw.ellipse(
        (x - DOT_RADIUS, y - DOT_RADIUS, x + DOT_RADIUS, y + DOT_RADIUS),
        fill=colour, outline=(0, 0, 0),
    )
  return np.asarray(image)


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
  """Nearest-neighbour upscaling of an `[H, W, 3]` uint8 frame."""
  return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def trajectory_video(
    frames: np.ndarray, centroids: np.ndarray, scale: int = 4
) -> np.ndarray:
  """Every token's centroid track drawn over its video, frame by frame.

  Args:
    frames: `[b, T, H, W, 3]` uint8 frames.
    centroids: `[b, T, k, 2]` (y, x) centroids in frame pixel units.
    scale: upscaling factor of the drawing.

  Returns:
    `[b, T, H * scale, W * scale, 3]` uint8; frame t shows the trails up to t.
  """
  colours = token_colours(centroids.shape[-2])
  return np.stack([
      np.stack([draw_tracks(video[t], tracks[: t + 1], scale, colours)
                for t in range(video.shape[0])])
      for video, tracks in zip(frames, centroids)
  ])
