"""Readout heads on frozen MooG states: points, depth and boxes (docs/moog_reference.md §10).

Every head reads one of MooG's state sequences (`features` in {'predicted', 'corrected',
'concat'}; 'concat' = `states_concat`, the official MOVi choice) and stops gradients into
the backbone unless `finetune=True`. The heads are built from MooG's own blocks
(`modules.Transformer` with cross-attention only, `modules.fourier_features`,
`modules.grid_coordinates`), so they follow the same layer conventions
(docs/moog_reference.md §5–§6).

Heads:

* `PointReadout` / `BoxReadout`: the recurrent conditional readout of the MOVi config
  (upstream `ConditionalAutoregressiveReadout`). One state per track, initialised from
  Fourier(16 bases, replace) of the conditioning (a query point or a box, in [0, 1]) ->
  MLP (`initial_state`). Per frame: the state is reset to the conditioning on the
  track's query frame; `corr = state + Transformer(queries=state, kv=features_t)`
  (cross-attention only); `state = LN_1e-4(corr + MLP(corr))`. Outputs are read from
  `corr`. Positions and boxes are `σ(MLP(corr))` upstream; with
  `anchor_to_query=True` (this project's default, `config.readout.anchor_to_query`) they
  are `σ(logit(conditioning) + MLP(corr))` with the MLP's output layer zero-initialised,
  so training starts from the never-moving track and learns the motion as an offset.
  Upstream never trained these heads (docs/moog_reference.md §10: empty loss dicts), so the
  choice is open; measured on the synthetic data in
  docs/log/2026-11_readout_experiments_textured_scenes.md. The carried state
  goes in and out explicitly, so a long video can be read in temporal slices
  (`moog/readouts/sliced_eval.py`).
* `DenseReadout`: a cross-attention decoder queried at pixel coordinates
  (zeros ‖ Fourier(16) of (y, x) in [-1, 1], as MooG's pixel decoder), Dense -> C per
  frame. Pixels are decoded independently, so any resolution or pixel subset works.

Output layouts follow the batch contract of docs/design.md: points are track-major
`[*b, N, T, ...]` like `target_points`/`occluded`; boxes are time-major `[*b, T, K, 4]` like
`boxes`; depth is `[*b, T, h, w, 1]` like `depth`.

Coordinates: point heads work in normalised (x, y) = raster pixels / (W, H), in [0, 1];
boxes are normalised [ymin, xmin, ymax, xmax]. Use `normalise_query_points` and
`positions_to_pixels` to convert from / to the raster pixels of the batch.

Losses (upstream leaves them open, docs/moog_reference.md §14; choices follow TAPIR where one
exists):

* `point_tracking_loss`: Huber (δ = 4 px) on the Euclidean position error measured in
  pixels of a 256 x 256 raster (so the loss does not depend on the input resolution), on
  ground-truth-visible frames, weight 0.05; sigmoid BCE of the visibility logit against
  "not occluded", weight 1; sigmoid BCE of the certainty logit against "position error
  < 6 px on the 256 raster" (TAPIR's expected-distance loss with the sign flipped, since
  visible iff σ(vis)·σ(cert) > 0.5), positions stop-gradiented, visible frames only,
  weight 1. Frames before a track's query frame are not supervised: the head is causal
  and has not seen the query yet there.
* `depth_loss`: MSE between the head's output and log(metric depth) over valid pixels;
  `log_depth_to_depth` (exp) inverts it before scoring with `videolib.metrics`.
* `box_tracking_loss`: L1 over the 4 normalised coordinates plus `iou_weight` x (1 − IoU)
  on valid frames from the query frame on.

Each loss is a mean over its supervised entries, masked by validity (visibility, box
existence, valid depth, `tracks_valid`) and by the example mask `_mask`; it is 0, not NaN,
when no entry is supervised.

Bad inputs: `validate_readout_batch` raises a clear `ValueError` on host-side numpy
batches (query points outside the frame, query frames outside the clip, valid tracks
never visible, inverted or out-of-range boxes, non-finite values); the readout task runs
it on every batch before it reaches the devices. Inside the graph, tracks whose query
frame lies outside the clip are never reset (temporal slices rely on this) and get no
loss on frames before the query frame.
"""

from collections.abc import Mapping
from typing import ClassVar, Literal

import chex
import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int, Shaped

from moog import model as moog_model
from moog import modules
from videolib import metrics as metrics_lib

FeatureChoice = Literal['predicted', 'corrected', 'concat']
FEATURE_KEYS = {
    'predicted': 'states_predicted',
    'corrected': 'states_corrected',
    'concat': 'states_concat',
}
LOSS_RESOLUTION = (256, 256)
ANCHOR_EPSILON = 1e-4


def select_features(moog_outputs: Mapping[str, jax.Array], which: FeatureChoice) -> jax.Array:
  """Picks the MooG state sequence a head reads.

  Args:
    moog_outputs: MooG outputs with `states_predicted`, `states_corrected` ([*b, T, n, d])
      and/or `states_concat` ([*b, T, 2n, d]).
    which: 'predicted', 'corrected' or 'concat'.

  Returns:
    [*b, T, tokens, d] features.
  """
  if which not in FEATURE_KEYS:
    raise ValueError(f'features must be one of {sorted(FEATURE_KEYS)}, got {which!r}.')
  key = FEATURE_KEYS[which]
  if key in moog_outputs:
    return moog_outputs[key]
  if which == 'concat':
    # Same token order as MooG: predicted tokens first, then corrected ones.
    return jnp.concatenate(
        [moog_outputs['states_predicted'], moog_outputs['states_corrected']], axis=-2
    )
  raise KeyError(f'MooG outputs lack {key!r}; available: {sorted(moog_outputs)}.')


def _frozen_features(
    moog_outputs: Mapping[str, jax.Array], which: FeatureChoice, finetune: bool
) -> jax.Array:
  features = select_features(moog_outputs, which)
  return features if finetune else jax.lax.stop_gradient(features)


class MlpBlock(nn.Module):
  """Dense(hidden) -> GELU(tanh) -> Dense(output); output defaults to the input width.

  `zero_output=True` zero-initialises the output layer, so the block starts as 0.
  """

  hidden_size: int
  output_size: int | None = None
  zero_output: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    output_size = self.output_size or x.shape[-1]
    x = nn.gelu(nn.Dense(self.hidden_size, name='dense_in')(x), approximate=True)
    output_init = nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
    return nn.Dense(output_size, kernel_init=output_init, name='dense_out')(x)


def anchored_sigmoid(offset_logits: jax.Array, anchor: jax.Array) -> jax.Array:
  """`σ(logit(anchor) + offset_logits)`: values in (0, 1) that equal `anchor` at offset 0.

  The anchor is clipped to [1e-4, 1 - 1e-4] so points and box sides on the frame's
  border have a finite logit.
  """
  anchor = jnp.clip(anchor, ANCHOR_EPSILON, 1.0 - ANCHOR_EPSILON)
  return jax.nn.sigmoid(jnp.log(anchor) - jnp.log1p(-anchor) + offset_logits)


# ----------------------------------------------------------------------------------------
# Recurrent conditional readouts (points, boxes).
# ----------------------------------------------------------------------------------------


class _RecurrentStep(nn.Module):
  """One frame of the recurrent readout; scanned over time by `RecurrentReadout`."""

  width: int
  num_layers: int
  num_heads: int
  qkv_size: int
  mlp_dim: int

  @nn.compact
  def __call__(
      self,
      state: jax.Array,
      frame_inputs: tuple[jax.Array, jax.Array],
      conditioning: jax.Array,
  ) -> tuple[jax.Array, jax.Array]:
    """Advances the track states by one frame.

    Args:
      state: [*b, m, width] carried state.
      frame_inputs: (features [*b, n, d] of this frame, reset [*b, m] bool marking the
        tracks whose query frame this is).
      conditioning: [*b, m, width] embedded conditioning (broadcast over time).

    Returns:
      (next state [*b, m, width], corrected state [*b, m, width] read by the heads).
    """
    features, reset = frame_inputs
    state = jnp.where(reset[..., None], conditioning, state)
    corrected = state + modules.Transformer(
        num_layers=self.num_layers,
        num_heads=self.num_heads,
        qkv_size=self.qkv_size,
        mlp_dim=self.mlp_dim,
        self_attention=False,
        hidden_size=self.width,
        output_size=self.width,
        name='transformer',
    )(state, inputs_kv=features)
    next_state = corrected + MlpBlock(self.width, self.width, name='predictor')(corrected)
    # The state norm of MooG itself: scale-only LayerNorm, eps 1e-4 (docs/moog_reference.md §10).
    state_norm = nn.LayerNorm(
        epsilon=moog_model.STATE_NORM_EPSILON, use_bias=False, name='state_norm'
    )
    return state_norm(next_state), corrected


class RecurrentReadout(nn.Module):
  """Shared body of `PointReadout` and `BoxReadout` (upstream ConditionalAutoregressive).

  Subclasses set `value_size` (width of the value head) and `logit_size` (0: none).

  Attributes:
    width: state width (512 in the MOVi config).
    num_layers: cross-attention layers per frame (3).
    num_heads: attention heads (8).
    qkv_size: total q/k/v width over heads (512).
    mlp_dim: hidden width of the transformer MLPs (2048).
    num_fourier_bases: Fourier bases of the conditioning embedding (16).
    features: which MooG states to read: 'predicted', 'corrected' or 'concat'.
    finetune: if False, no gradient flows into the MooG features.
    anchor_to_query: if True the value head predicts logit offsets from the track's
      conditioning (`anchored_sigmoid`) and its output layer starts at zero, so an
      untrained head predicts the never-moving track; if False (upstream) the value is
      `σ(MLP(corr))` directly.
    scan_unroll: frames per iteration of the time loop (`lax.scan`'s `unroll`); the
      result does not depend on it. Cost analysis unrolls fully, as XLA counts a loop
      body once.
  """

  value_size: ClassVar[int]
  logit_size: ClassVar[int]

  width: int = 512
  num_layers: int = 3
  num_heads: int = 8
  qkv_size: int = 512
  mlp_dim: int = 2048
  num_fourier_bases: int = 16
  features: FeatureChoice = 'concat'
  finetune: bool = False
  anchor_to_query: bool = False
  scan_unroll: int = 1

  def setup(self):
    self.initializer = MlpBlock(self.width, self.width)
    scanned_step = nn.scan(
        _RecurrentStep,
        variable_broadcast='params',
        split_rngs={'params': False},
        in_axes=(0, nn.broadcast),
        out_axes=0,
        unroll=self.scan_unroll,
    )
    self.step = scanned_step(
        width=self.width,
        num_layers=self.num_layers,
        num_heads=self.num_heads,
        qkv_size=self.qkv_size,
        mlp_dim=self.mlp_dim,
    )
    self.value_head = MlpBlock(self.width, self.value_size, zero_output=self.anchor_to_query)
    if self.logit_size:
      self.logit_head = MlpBlock(self.width, self.logit_size)

  def initial_state(self, conditioning: Float[Array, '*b m k']) -> Float[Array, '*b m w']:
    """[*b, m, k] conditioning in [0, 1] -> [*b, m, width] embedded state."""
    return self.initializer(modules.fourier_features(conditioning, self.num_fourier_bases))

  def rollout(
      self,
      moog_outputs: Mapping[str, jax.Array],
      conditioning: Float[Array, '*b m k'],
      query_frame: Int[Array, '*b m'],
      readout_state: Float[Array, '*b m w'] | None,
  ) -> tuple[Float[Array, '*b T m v'], Float[Array, '*b T m l'] | None,
             Float[Array, '*b m w']]:
    """Runs the recurrence over all frames of `moog_outputs`.

    Args:
      moog_outputs: MooG outputs; the selected states are [*b, T, n, d].
      conditioning: [*b, m, k] per-track conditioning in [0, 1].
      query_frame: [*b, m] int frame (relative to this slice) at which each track's state
        is reset to its conditioning; values outside [0, T) never reset.
      readout_state: optional [*b, m, width] state carried from the previous slice;
        `initial_state(conditioning)` when None.

    Returns:
      (values [*b, T, m, value_size], logits [*b, T, m, logit_size] or None,
      final state [*b, m, width]).
    """
    features = _frozen_features(moog_outputs, self.features, self.finetune)
    num_frames = features.shape[-3]
    batch_shape = features.shape[:-3]
    num_tracks = conditioning.shape[-2]
    chex.assert_shape(conditioning, (*batch_shape, num_tracks, None))
    chex.assert_shape(query_frame, (*batch_shape, num_tracks))

    embedded = self.initial_state(conditioning)
    state = embedded if readout_state is None else readout_state
    chex.assert_shape(state, (*batch_shape, num_tracks, self.width))

    reset = jnp.arange(num_frames)[:, None] == query_frame[..., None, :]  # [*b, T, m]
    state, corrected = self.step(
        state,
        (
            einops.rearrange(features, '... t n d -> t ... n d'),
            einops.rearrange(reset, '... t m -> t ... m'),
        ),
        embedded,
    )
    corrected = einops.rearrange(corrected, 't ... m w -> ... t m w')
    logits = self.logit_head(corrected) if self.logit_size else None
    return self.value_head(corrected), logits, state

  def to_unit_interval(self, values: jax.Array, conditioning: jax.Array) -> jax.Array:
    """Value-head outputs `[*b, ..., k]` -> (0, 1), anchored on `conditioning` or not."""
    if self.anchor_to_query:
      return anchored_sigmoid(values, conditioning)
    return jax.nn.sigmoid(values)


class PointReadout(RecurrentReadout):
  """Point tracking head: one recurrent state per query track (MOVi config).

  Returns a dict with
    'position': [*b, N, T, 2] normalised (x, y) in [0, 1] (sigmoid);
    'visibility_logit', 'certainty_logit': [*b, N, T];
    'visible': [*b, N, T] bool, σ(vis)·σ(cert) > 0.5;
    'readout_state': [*b, N, width], to pass to the next slice.
  """

  value_size: ClassVar[int] = 2
  logit_size: ClassVar[int] = 2

  def __call__(
      self,
      moog_outputs: Mapping[str, jax.Array],
      query_xy: Float[Array, '*b N 2'],
      query_frame: Int[Array, '*b N'],
      readout_state: Float[Array, '*b N w'] | None = None,
  ) -> dict[str, jax.Array]:
    """Tracks the query points through the frames of `moog_outputs`.

    Args:
      moog_outputs: MooG outputs, states [*b, T, n, d].
      query_xy: [*b, N, 2] normalised (x, y) query positions in [0, 1].
      query_frame: [*b, N] int query frame relative to this slice (`t - slice_start`).
      readout_state: optional state returned by the previous slice.

    Returns:
      The dict described in the class docstring.
    """
    values, logits, state = self.rollout(moog_outputs, query_xy, query_frame, readout_state)
    values = einops.rearrange(values, '... t n c -> ... n t c')
    logits = einops.rearrange(logits, '... t n c -> ... n t c')
    return {
        'position': self.to_unit_interval(values, query_xy[..., None, :]),
        'visibility_logit': logits[..., 0],
        'certainty_logit': logits[..., 1],
        'visible': visible_from_logits(logits[..., 0], logits[..., 1]),
        'readout_state': state,
    }


class BoxReadout(RecurrentReadout):
  """Box tracking head conditioned on each object's box on the query frame.

  Returns a dict with
    'boxes': [*b, T, K, 4] normalised [ymin, xmin, ymax, xmax] (sigmoid; a side may come
      out inverted early in training, which the IoU metric scores as zero area);
    'readout_state': [*b, K, width].
  """

  value_size: ClassVar[int] = 4
  logit_size: ClassVar[int] = 0

  def __call__(
      self,
      moog_outputs: Mapping[str, jax.Array],
      query_boxes: Float[Array, '*b K 4'],
      query_frame: Int[Array, '*b K'] | Int[Array, ''] | int = 0,
      readout_state: Float[Array, '*b K w'] | None = None,
  ) -> dict[str, jax.Array]:
    """Tracks the query boxes through the frames of `moog_outputs`.

    Args:
      moog_outputs: MooG outputs, states [*b, T, n, d].
      query_boxes: [*b, K, 4] normalised boxes on the query frame (frame 0 in MooG).
      query_frame: int or [*b, K] query frame relative to this slice.
      readout_state: optional state returned by the previous slice.

    Returns:
      The dict described in the class docstring.
    """
    query_frame = jnp.broadcast_to(jnp.asarray(query_frame, jnp.int32), query_boxes.shape[:-1])
    values, _, state = self.rollout(moog_outputs, query_boxes, query_frame, readout_state)
    return {'boxes': self.to_unit_interval(values, query_boxes[..., None, :, :]),
            'readout_state': state}


def visible_from_logits(
    visibility_logit: Float[Array, '*s'], certainty_logit: Float[Array, '*s'],
    threshold: float = 0.5
) -> Bool[Array, '*s']:
  """MooG heads: visible iff σ(visibility) · σ(certainty) > threshold."""
  return jax.nn.sigmoid(visibility_logit) * jax.nn.sigmoid(certainty_logit) > threshold


# ----------------------------------------------------------------------------------------
# Correlation trackers (points, boxes).
# ----------------------------------------------------------------------------------------


def cell_centres(size: int) -> Float[Array, ' size']:
  """[size] normalised centres (j + 0.5) / size of a map's cells along one axis."""
  return (jnp.arange(size, dtype=jnp.float32) + 0.5) / size


def _hat_weights(coord: jax.Array, size: int) -> jax.Array:
  """[...] normalised coordinates -> [..., size] bilinear weights over the map's cells.

  Outside the outermost cell centres the coordinate is clamped, so weights sum to 1.
  """
  index = jnp.clip(coord * size - 0.5, 0.0, size - 1.0)
  return jnp.maximum(0.0, 1.0 - jnp.abs(index[..., None] - jnp.arange(size)))


def sample_maps(maps: Float[Array, '*b T h w C'], xy: Float[Array, '*b N T 2']
                ) -> Float[Array, '*b N T C']:
  """Bilinear samples of per-frame feature maps at per-frame positions.

  Args:
    maps: [*b, T, h, w, C] feature maps; cell (i, j) sits at normalised
      (x, y) = ((j + 0.5) / w, (i + 0.5) / h).
    xy: [*b, N, T, 2] normalised (x, y) positions, one per track and frame.

  Returns:
    [*b, N, T, C].
  """
  height, width = maps.shape[-3:-1]
  weight_y = _hat_weights(xy[..., 1], height)
  weight_x = _hat_weights(xy[..., 0], width)
  return jnp.einsum('...nth,...ntw,...thwc->...ntc', weight_y, weight_x, maps)


def box_coverage(boxes: Float[Array, '*b K 4'], height: int, width: int
                 ) -> Float[Array, '*b K h w']:
  """Fraction of each map cell inside each box.

  Args:
    boxes: [*b, K, 4] normalised [ymin, xmin, ymax, xmax].
    height, width: map size.

  Returns:
    [*b, K, h, w] coverage in [0, 1].
  """
  def overlap(low, high, size):
    edges = jnp.arange(size, dtype=jnp.float32)
    return jnp.clip(jnp.minimum(edges + 1, high[..., None] * size)
                    - jnp.maximum(edges, low[..., None] * size), 0.0, 1.0)
  along_y = overlap(boxes[..., 0], boxes[..., 2], height)
  along_x = overlap(boxes[..., 1], boxes[..., 3], width)
  return along_y[..., :, None] * along_x[..., None, :]


def window_soft_argmax(logits: Float[Array, '*s h w'], radius: int) -> Float[Array, '*s 2']:
  """Soft-argmax inside a square window around each map's argmax (TAPIR's readout).

  Args:
    logits: [..., h, w] matching scores.
    radius: half-width of the window, in cells (0: the argmax cell itself).

  Returns:
    [..., 2] normalised (x, y) expectation over the window's softmax.
  """
  height, width = logits.shape[-2:]
  flat_index = jnp.argmax(logits.reshape(logits.shape[:-2] + (-1,)), axis=-1)
  peak_y, peak_x = flat_index // width, flat_index % width
  rows = jnp.abs(jnp.arange(height) - peak_y[..., None]) <= radius
  cols = jnp.abs(jnp.arange(width) - peak_x[..., None]) <= radius
  inside = rows[..., :, None] & cols[..., None, :]
  weights = jax.nn.softmax(jnp.where(inside, logits, -jnp.inf), axis=(-2, -1))
  return jnp.stack([jnp.einsum('...hw,w->...', weights, cell_centres(width)),
                    jnp.einsum('...hw,h->...', weights, cell_centres(height))], axis=-1)


def _l2_normalise(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-12)


class _CorrelationTracker(nn.Module):
  """Shared body of `CorrelationPointReadout` and `CorrelationBoxReadout`.

  A readout whose positions come from matching, not from regression: per frame, a
  cross-attention decoder (`modules.PixelDecoder`, queried at the cells of a
  `map_size`² grid) turns the frozen tokens into an L2-normalised feature map; on a
  track's query frame a template is read from that map (bilinear at a query point, or the
  mean over a box); on every frame the template's cosine similarity with the map, times
  a learned temperature, is the matching score, and a soft-argmax in a window around its
  peak gives the match position. The track moves by the displacement of the match from
  the query frame's own match, so a template whose match is off by a fraction of a cell
  on the query frame still gives the right motion, and a still scene gives zero motion.
  This is the cost-volume readout of TAP-Net / TAPIR; the recurrent heads above are
  MooG's. It needs no recurrence: the state carried between temporal slices is the
  template and its query-frame match, `[*b, m, map_channels + 2]`.

  Attributes:
    num_layers, num_heads, qkv_size, mlp_dim, num_fourier_bases: decoder sizes.
    map_size: cells per side of the feature map (the frame resolution by default in
      the readout task, so a cell is a pixel).
    map_channels: feature channels C.
    window_radius: soft-argmax window half-width, in cells.
    features: which MooG states to read: 'predicted', 'corrected' or 'concat'.
    finetune: if False, no gradient flows into the MooG features.
  """

  num_layers: int = 3
  num_heads: int = 8
  qkv_size: int = 512
  mlp_dim: int = 2048
  num_fourier_bases: int = 16
  map_size: int = 32
  map_channels: int = 32
  window_radius: int = 2
  features: FeatureChoice = 'concat'
  finetune: bool = False

  def initial_state(self, conditioning: Float[Array, '*b m k']) -> Float[Array, '*b m w']:
    """[*b, m, k] conditioning -> [*b, m, C + 2] empty state (set on the query frame)."""
    return jnp.zeros(conditioning.shape[:-1] + (self.map_channels + 2,), jnp.float32)

  def feature_maps(self, moog_outputs: Mapping[str, jax.Array]
                   ) -> Float[Array, '*b T s s C']:
    """MooG states [*b, T, n, d] -> [*b, T, map_size, map_size, C] unit-norm features."""
    features = _frozen_features(moog_outputs, self.features, self.finetune)
    maps = modules.PixelDecoder(
        num_layers=self.num_layers, num_heads=self.num_heads, qkv_size=self.qkv_size,
        mlp_dim=self.mlp_dim, num_fourier_bases=self.num_fourier_bases,
        out_channels=self.map_channels, name='decoder',
    )(features, modules.grid_coordinates(self.map_size, self.map_size))
    return _l2_normalise(maps)

  def match(
      self,
      maps: jax.Array,
      new_template: jax.Array,
      query_frame: jax.Array,
      readout_state: jax.Array | None,
  ) -> dict[str, jax.Array]:
    """Matches each track's template against every frame.

    Args:
      maps: [*b, T, h, w, C] `feature_maps`.
      new_template: [*b, m, T, C] the template each frame would give as the query frame.
      query_frame: [*b, m] query frame relative to this slice; outside [0, T) the carried
        template and match are kept.
      readout_state: [*b, m, C + 2] carried state, or None.

    Returns:
      dict with 'template' [*b, m, C], 'logits' [*b, m, T, h, w] matching scores,
      'match' [*b, m, T, 2] normalised (x, y), 'displacement' [*b, m, T, 2] of the match
      from the query frame's match, 'state' [*b, m, C + 2].
    """
    num_frames = maps.shape[-4]
    on_query = jnp.arange(num_frames) == query_frame[..., None]  # [*b, m, T]
    in_slice = jnp.any(on_query, axis=-1, keepdims=True)
    on_query = on_query.astype(maps.dtype)
    if readout_state is None:
      readout_state = self.initial_state(new_template[..., 0, :])
    template = jnp.where(
        in_slice, _l2_normalise(jnp.einsum('...mt,...mtc->...mc', on_query, new_template)),
        readout_state[..., :self.map_channels])
    log_temperature = self.param('log_temperature', nn.initializers.constant(jnp.log(10.0)),
                                 ())
    logits = jnp.exp(log_temperature) * jnp.einsum('...mc,...thwc->...mthw', template, maps)
    match = window_soft_argmax(logits, self.window_radius)
    query_match = jnp.where(in_slice, jnp.einsum('...mt,...mtc->...mc', on_query, match),
                            readout_state[..., self.map_channels:])
    return {
        'template': template,
        'logits': logits,
        'match': match,
        'displacement': match - query_match[..., None, :],
        'state': jnp.concatenate([template, query_match], axis=-1),
    }


class CorrelationPointReadout(_CorrelationTracker):
  """Point tracking by template matching (see `_CorrelationTracker`).

  The same outputs as `PointReadout`, plus 'correlation_logits' [*b, N, T, h, w] when
  asked (for `correlation_loss`). Before a track's query frame (unsupervised, unscored
  in TAP-Vid `first` mode) it sits at its query position with zero logits (not
  visible), whatever the carried state holds. Visibility and certainty
  logits come from an MLP on the template times the feature at the match and the match's
  cosine score.
  """

  @nn.compact
  def __call__(
      self,
      moog_outputs: Mapping[str, jax.Array],
      query_xy: Float[Array, '*b N 2'],
      query_frame: Int[Array, '*b N'],
      readout_state: Float[Array, '*b N w'] | None = None,
      with_logits: bool = False,
  ) -> dict[str, jax.Array]:
    """Tracks the query points through the frames of `moog_outputs`.

    Args:
      moog_outputs: MooG outputs, states [*b, T, n, d].
      query_xy: [*b, N, 2] normalised (x, y) query positions in [0, 1].
      query_frame: [*b, N] int query frame relative to this slice.
      readout_state: optional state returned by the previous slice.
      with_logits: also return the matching scores.

    Returns:
      'position' [*b, N, T, 2], 'visibility_logit', 'certainty_logit', 'visible'
      [*b, N, T], 'readout_state' [*b, N, C + 2] (and 'correlation_logits').
    """
    maps = self.feature_maps(moog_outputs)
    num_frames = maps.shape[-4]
    per_frame_query = jnp.broadcast_to(query_xy[..., None, :],
                                       query_xy.shape[:-1] + (num_frames, 2))
    matched = self.match(maps, sample_maps(maps, per_frame_query), query_frame,
                         readout_state)
    before_query = jnp.arange(num_frames) < query_frame[..., None]
    position = jnp.clip(per_frame_query + matched['displacement'], 0.0, 1.0)
    position = jnp.where(before_query[..., None], per_frame_query, position)
    at_match = sample_maps(maps, matched['match'])
    score = jnp.einsum('...tc,...c->...t', at_match, matched['template'])
    logits = MlpBlock(self.map_channels * 2, 2, name='visibility_head')(jnp.concatenate(
        [at_match * matched['template'][..., None, :], score[..., None]], axis=-1))
    logits = jnp.where(before_query[..., None], 0.0, logits)
    outputs = {
        'position': position,
        'visibility_logit': logits[..., 0],
        'certainty_logit': logits[..., 1],
        'visible': visible_from_logits(logits[..., 0], logits[..., 1]),
        'readout_state': matched['state'],
    }
    if with_logits:
      outputs['correlation_logits'] = matched['logits']
    return outputs


class CorrelationBoxReadout(_CorrelationTracker):
  """Box tracking by template matching: the query box moves with its template's match.

  The template is the mean feature over the query-frame box (cells weighted by
  `box_coverage`); the box keeps its size. Same outputs as `BoxReadout`.
  """

  @nn.compact
  def __call__(
      self,
      moog_outputs: Mapping[str, jax.Array],
      query_boxes: Float[Array, '*b K 4'],
      query_frame: Int[Array, '*b K'] | Int[Array, ''] | int = 0,
      readout_state: Float[Array, '*b K w'] | None = None,
  ) -> dict[str, jax.Array]:
    """Tracks the query boxes through the frames of `moog_outputs`.

    Args:
      moog_outputs: MooG outputs, states [*b, T, n, d].
      query_boxes: [*b, K, 4] normalised boxes on the query frame.
      query_frame: int or [*b, K] query frame relative to this slice.
      readout_state: optional state returned by the previous slice.

    Returns:
      'boxes' [*b, T, K, 4], 'readout_state' [*b, K, C + 2].
    """
    query_frame = jnp.broadcast_to(jnp.asarray(query_frame, jnp.int32), query_boxes.shape[:-1])
    maps = self.feature_maps(moog_outputs)
    coverage = box_coverage(query_boxes, self.map_size, self.map_size)
    box_mean = jnp.einsum('...khw,...thwc->...ktc', coverage, maps) / jnp.maximum(
        jnp.sum(coverage, axis=(-2, -1)), 1e-6)[..., None, None]
    matched = self.match(maps, box_mean, query_frame, readout_state)
    dx, dy = matched['displacement'][..., 0], matched['displacement'][..., 1]
    boxes = query_boxes[..., None, :] + jnp.stack([dy, dx, dy, dx], axis=-1)
    before_query = (jnp.arange(maps.shape[-4]) < query_frame[..., None])[..., None]
    boxes = jnp.where(before_query, query_boxes[..., None, :], jnp.clip(boxes, 0.0, 1.0))
    return {'boxes': einops.rearrange(boxes, '... k t c -> ... t k c'),
            'readout_state': matched['state']}


# ----------------------------------------------------------------------------------------
# Dense readout (depth).
# ----------------------------------------------------------------------------------------


class DenseReadout(nn.Module):
  """Per-frame cross-attention decoder queried at pixel coordinates (MOVi depth head).

  This is MooG's `PixelDecoder` (zeros(d) ‖ Fourier(coords) queries, 512 + 64 = 576 wide
  in the MOVi config; cross-attention-only blocks; linear head) reading the chosen state
  sequence frame by frame. Each pixel attends to its frame's features only, so decoding
  a pixel subset (training lattice) or the full ground-truth resolution (evaluation)
  gives the same value per pixel. Attention memory grows with T·h·w·tokens: a frame
  grid larger than `pixels_per_chunk` is decoded chunk after chunk (a scan over pixel
  chunks; in one pass the paper head at 128² holds 1 GiB of attention logits per layer
  for each frame of each example), and long clips are decoded in temporal slices
  (`moog/readouts/sliced_eval.py`).

  Attributes:
    output_size: channels per pixel (1 for depth).
    num_layers, num_heads, qkv_size, mlp_dim: transformer sizes (3, 8, 512, 2048).
    num_fourier_bases: Fourier bases of the pixel coordinates (16).
    features: which MooG states to read: 'predicted', 'corrected' or 'concat'.
    finetune: if False, no gradient flows into the MooG features.
    pixels_per_chunk: pixels of a shared `[h, w, 2]` grid decoded at once (0 = all);
      per-frame coordinates (the training lattice) are decoded in one go.
  """

  output_size: int = 1
  num_layers: int = 3
  num_heads: int = 8
  qkv_size: int = 512
  mlp_dim: int = 2048
  num_fourier_bases: int = 16
  features: FeatureChoice = 'concat'
  finetune: bool = False
  pixels_per_chunk: int = 0

  @nn.compact
  def __call__(
      self, moog_outputs: Mapping[str, jax.Array],
      coords: Float[Array, 'h w 2'] | Float[Array, '*b T h w 2'],
  ) -> Float[Array, '*b T h w c']:
    """Decodes every frame at the given pixel coordinates.

    Args:
      moog_outputs: MooG outputs, states [*b, T, n, d].
      coords: (y, x) pixel coordinates in [-1, 1] (`modules.grid_coordinates`), [h, w, 2]
        shared by all frames or [*b, T, h, w, 2] per frame (e.g. a subsampling lattice).

    Returns:
      [*b, T, h, w, output_size] values (log depth for `depth_loss`).
    """
    features = _frozen_features(moog_outputs, self.features, self.finetune)
    decoder = modules.PixelDecoder(
        num_layers=self.num_layers,
        num_heads=self.num_heads,
        qkv_size=self.qkv_size,
        mlp_dim=self.mlp_dim,
        num_fourier_bases=self.num_fourier_bases,
        out_channels=self.output_size,
        name='decoder',
    )
    shared_grid = coords.ndim == 3
    if not shared_grid or not 0 < self.pixels_per_chunk < coords.shape[0] * coords.shape[1]:
      return decoder(features, coords)
    return _decode_in_chunks(decoder, features, coords, self.pixels_per_chunk)


def _decode_in_chunks(decoder: nn.Module, features: jax.Array, coords: jax.Array,
                      chunk: int) -> jax.Array:
  """`decoder(features, coords)` for a shared [h, w, 2] grid, `chunk` pixels at a time.

  Every pixel is decoded independently (cross-attention only), so the chunks give the
  values of one pass; the grid is padded to whole chunks and cropped back.
  """
  height, width = coords.shape[:2]
  num_chunks = -(-height * width // chunk)
  flat = jnp.pad(coords.reshape(-1, 2), ((0, num_chunks * chunk - height * width), (0, 0)))
  chunks = einops.rearrange(flat, '(c p) two -> c p 1 two', p=chunk)  # chunk x 1 images.

  def decode_chunk(module, carry, tokens, chunk_coords):
    return carry, module(tokens, chunk_coords)

  scan = nn.scan(decode_chunk, variable_broadcast='params', split_rngs={'params': False},
                 in_axes=(nn.broadcast, 0), out_axes=0)
  _, values = scan(decoder, None, features, chunks)  # [c, *b, T, p, 1, C]
  values = einops.rearrange(values, 'c ... p 1 ch -> ... (c p) ch')[..., :height * width, :]
  return einops.rearrange(values, '... (h w) ch -> ... h w ch', h=height, w=width)


def log_depth_to_depth(log_depth: Float[Array, '*s']) -> Float[Array, '*s']:
  """Inverts the depth training target: the DenseReadout predicts log(metric depth)."""
  return jnp.exp(log_depth)


# ----------------------------------------------------------------------------------------
# Coordinate conversions.
# ----------------------------------------------------------------------------------------


def normalise_query_points(
    query_points: Float[Array, '*b N 3'], image_size: tuple[int, int]
) -> tuple[Float[Array, '*b N 2'], Int[Array, '*b N']]:
  """Batch-contract queries (t, y, x) pixels -> (normalised (x, y), query frame).

  Args:
    query_points: [*b, N, 3] (t, y, x); y, x raster pixels of an image_size frame.
    image_size: (height, width).

  Returns:
    (query_xy [*b, N, 2] in [0, 1], query_frame [*b, N] int32 = round(t)).
  """
  height, width = image_size
  query_xy = query_points[..., ::-1][..., :2] / jnp.asarray([width, height], jnp.float32)
  return query_xy, jnp.round(query_points[..., 0]).astype(jnp.int32)


def positions_to_pixels(position: Float[Array, '*s 2'], image_size: tuple[int, int]
                        ) -> Float[Array, '*s 2']:
  """Normalised (x, y) -> (x, y) raster pixels of an image_size (height, width) frame."""
  height, width = image_size
  return position * jnp.asarray([width, height], position.dtype)


# ----------------------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------------------


def _masked_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
  """Mean of `values` over entries with weight > 0; 0 when there are none."""
  weight = jnp.broadcast_to(weight, values.shape).astype(jnp.float32)
  total = jnp.sum(jnp.where(weight > 0, values * weight, 0.0))
  return total / jnp.maximum(jnp.sum(weight), 1.0)


def _example_weight(mask: jax.Array | None, batch_shape: tuple[int, ...]) -> jax.Array:
  if mask is None:
    return jnp.ones(batch_shape, bool)
  chex.assert_shape(mask, batch_shape)
  return mask.astype(bool)


def _supervised_track_frames(occluded, query_frame, tracks_valid, mask) -> jax.Array:
  """[B, N, T] frames a point loss supervises: from the query frame on, valid tracks of
  real examples (visibility is each loss's own business)."""
  batch_shape = occluded.shape[:-2]
  track_ok = _example_weight(mask, batch_shape)[..., None]
  if tracks_valid is not None:
    track_ok = track_ok & tracks_valid.astype(bool)
  return (jnp.arange(occluded.shape[-1]) >= query_frame[..., None]) & track_ok[..., None]


def huber_distance_loss(pred: Float[Array, '*s 2'], target: Float[Array, '*s 2'], delta: float
                        ) -> Float[Array, '*s']:
  """TAPIR Huber loss on the Euclidean distance of [..., 2] points, shape [...]."""
  sq_dist = jnp.sum(jnp.square(pred - target), axis=-1)
  # The epsilon keeps the gradient of sqrt finite at zero distance.
  dist = jnp.sqrt(sq_dist + 1e-12)
  return jnp.where(dist < delta, 0.5 * sq_dist, delta * (dist - 0.5 * delta))


def point_tracking_loss(
    outputs: Mapping[str, jax.Array],
    target_points: Float[Array, '*b N T 2'],
    occluded: Shaped[Array, '*b N T'],
    query_frame: Int[Array, '*b N'],
    *,
    image_size: tuple[int, int],
    tracks_valid: Shaped[Array, '*b N'] | None = None,
    mask: Shaped[Array, '*b'] | None = None,
    huber_delta: float = 4.0,
    certainty_threshold: float = 6.0,
    position_weight: float = 0.05,
    visibility_weight: float = 1.0,
    certainty_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Position Huber + visibility BCE + certainty BCE (see the module docstring).

  Args:
    outputs: `PointReadout` outputs ('position' [B, N, T, 2] normalised (x, y),
      'visibility_logit', 'certainty_logit' [B, N, T]).
    target_points: [B, N, T, 2] ground-truth (x, y) raster pixels at image_size.
    occluded: [B, N, T] bool ground-truth occlusion.
    query_frame: [B, N] int query frame relative to the chunk.
    image_size: (height, width) of the raster of `target_points`.
    tracks_valid: optional [B, N] bool; False marks padding tracks.
    mask: optional [B] bool example mask.
    huber_delta: Huber threshold in pixels of the 256 x 256 loss raster.
    certainty_threshold: error (256-raster pixels) below which a prediction counts as
      certain.
    position_weight, visibility_weight, certainty_weight: term weights.

  Returns:
    (total loss, {'position', 'visibility', 'certainty'} unweighted terms).
  """
  batch_shape = occluded.shape[:-2]
  num_tracks, num_frames = occluded.shape[-2:]
  chex.assert_shape(target_points, (*batch_shape, num_tracks, num_frames, 2))
  chex.assert_shape(outputs['position'], (*batch_shape, num_tracks, num_frames, 2))
  supervised = _supervised_track_frames(occluded, query_frame, tracks_valid, mask)
  visible = ~occluded.astype(bool)

  height, width = image_size
  loss_h, loss_w = LOSS_RESOLUTION
  pred_px = outputs['position'] * jnp.asarray([loss_w, loss_h], jnp.float32)
  target_px = metrics_lib.convert_grid_coordinates(
      target_points, (width, height), (loss_w, loss_h)
  )
  # Padding may hold garbage targets; zero them so no NaN reaches a masked sum.
  target_px = jnp.where((supervised & visible)[..., None], target_px, 0.0)

  position = _masked_mean(
      huber_distance_loss(pred_px, target_px, huber_delta), supervised & visible
  )
  visibility = _masked_mean(
      optax.sigmoid_binary_cross_entropy(outputs['visibility_logit'], visible.astype(jnp.float32)), supervised
  )
  error = jnp.sqrt(jnp.sum(jnp.square(jax.lax.stop_gradient(pred_px) - target_px), axis=-1))
  certainty = _masked_mean(
      optax.sigmoid_binary_cross_entropy(outputs['certainty_logit'], (error < certainty_threshold).astype(jnp.float32)),
      supervised & visible,
  )
  total = (
      position_weight * position + visibility_weight * visibility + certainty_weight * certainty
  )
  return total, {'position': position, 'visibility': visibility, 'certainty': certainty}


def correlation_loss(
    correlation_logits: Float[Array, '*b N T h w'],
    target_points: Float[Array, '*b N T 2'],
    occluded: Shaped[Array, '*b N T'],
    query_frame: Int[Array, '*b N'],
    *,
    image_size: tuple[int, int],
    tracks_valid: Shaped[Array, '*b N'] | None = None,
    mask: Shaped[Array, '*b'] | None = None,
) -> Float[Array, '']:
  """Cross-entropy of the matching scores against the true position (TAP-Net's cost volume).

  The target distribution puts the bilinear weights of the ground-truth position on
  the four cells around it; supervised entries are those of `point_tracking_loss`
  (visible frames from the query frame on, valid tracks of real examples).

  Args:
    correlation_logits: [B, N, T, h, w] `CorrelationPointReadout` scores.
    target_points: [B, N, T, 2] ground-truth (x, y) raster pixels at image_size.
    occluded: [B, N, T] bool.
    query_frame: [B, N] int query frame relative to the chunk.
    image_size: (height, width) of the raster of `target_points`.
    tracks_valid: optional [B, N] bool.
    mask: optional [B] bool example mask.

  Returns:
    Scalar loss in nats.
  """
  map_height, map_width = correlation_logits.shape[-2:]
  supervised = (_supervised_track_frames(occluded, query_frame, tracks_valid, mask)
                & ~occluded.astype(bool))
  height, width = image_size
  target = jnp.where(supervised[..., None], target_points, 0.0) / jnp.asarray(
      [width, height], jnp.float32)
  target_weights = (_hat_weights(target[..., 1], map_height)[..., :, None]
                    * _hat_weights(target[..., 0], map_width)[..., None, :])
  log_probs = jax.nn.log_softmax(correlation_logits, axis=(-2, -1))
  cross_entropy = -jnp.sum(target_weights * log_probs, axis=(-2, -1))
  return _masked_mean(cross_entropy, supervised)


def depth_loss(
    pred_log_depth: Float[Array, 'B *s'],
    gt_depth: Float[Array, 'B *s'],
    *,
    valid: Shaped[Array, '...'] | None = None,  # Broadcastable to gt_depth.
    mask: Shaped[Array, 'B'] | None = None,
    min_depth: float = 1e-3,
) -> Float[Array, '']:
  """MSE between predicted log depth and log(metric depth) over valid pixels.

  Args:
    pred_log_depth: [B, ...] DenseReadout output, same shape as `gt_depth`.
    gt_depth: [B, ...] metric depth (e.g. [B, T, h, w, 1], subsampled like the queries).
    valid: optional bool mask broadcastable to `gt_depth`.
    mask: optional [B] bool example mask.
    min_depth: ground truth at or below this (or non-finite) is not supervised.

  Returns:
    Scalar loss.
  """
  chex.assert_equal_shape([pred_log_depth, gt_depth])
  batch_size = gt_depth.shape[0]
  is_valid = jnp.isfinite(gt_depth) & (gt_depth > min_depth)
  examples = _example_weight(mask, (batch_size,))
  is_valid &= examples.reshape((batch_size,) + (1,) * (gt_depth.ndim - 1))
  if valid is not None:
    is_valid &= jnp.broadcast_to(valid.astype(bool), gt_depth.shape)
  log_target = jnp.log(jnp.where(is_valid, gt_depth, 1.0))
  return _masked_mean(jnp.square(pred_log_depth - log_target), is_valid)


def box_tracking_loss(
    pred_boxes: Float[Array, 'B T K 4'],
    gt_boxes: Float[Array, 'B T K 4'],
    boxes_valid: Shaped[Array, 'B T K'],
    *,
    mask: Shaped[Array, 'B'] | None = None,
    query_frame: int = 0,
    iou_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L1 over the 4 coordinates (+ iou_weight · (1 − IoU)) on valid frames ≥ query frame.

  Args:
    pred_boxes: [B, T, K, 4] `BoxReadout` boxes.
    gt_boxes: [B, T, K, 4] ground-truth normalised boxes.
    boxes_valid: [B, T, K] bool.
    mask: optional [B] bool example mask.
    query_frame: conditioning frame; earlier frames are not supervised.
    iou_weight: weight of the 1 − IoU term.

  Returns:
    (total loss, {'l1', 'iou'} unweighted terms; 'iou' is 1 − IoU).
  """
  chex.assert_equal_shape([pred_boxes, gt_boxes])
  batch_size, num_frames = boxes_valid.shape[:2]
  supervised = (
      boxes_valid.astype(bool)
      & (jnp.arange(num_frames) >= query_frame)[None, :, None]
      & _example_weight(mask, (batch_size,))[:, None, None]
  )
  # Unsupervised entries (absent objects: zero boxes) are replaced by the unit box in both
  # arguments: a near-empty predicted box against an empty one has IoU 0 / ~0, whose
  # gradient is NaN, and a NaN times a zero weight is still NaN.
  unit_box = jnp.asarray([0.0, 0.0, 1.0, 1.0], pred_boxes.dtype)
  gt_boxes = jnp.where(supervised[..., None], gt_boxes, unit_box)
  pred_boxes = jnp.where(supervised[..., None], pred_boxes, unit_box)
  l1 = _masked_mean(jnp.sum(jnp.abs(pred_boxes - gt_boxes), axis=-1), supervised)
  iou, _ = metrics_lib.box_iou(pred_boxes, gt_boxes)
  one_minus_iou = _masked_mean(1.0 - iou, supervised)
  return l1 + iou_weight * one_minus_iou, {'l1': l1, 'iou': one_minus_iou}


# ----------------------------------------------------------------------------------------
# Host-side validation.
# ----------------------------------------------------------------------------------------


def validate_readout_batch(
    batch: Mapping[str, np.ndarray], image_size: tuple[int, int] | None = None
) -> None:
  """Raises ValueError on readout inputs that would silently corrupt training or eval.

  Checks, on the real (`_mask`) examples and valid (`tracks_valid`) tracks only: query
  frames inside the clip, query points inside the frame, finite targets, at least one
  visible frame per track; boxes finite, inside [0, 1] and not inverted where valid.

  Args:
    batch: host-side numpy batch following docs/design.md.
    image_size: (height, width); taken from `video` or `depth` when omitted.
  """
  examples = np.asarray(batch.get('_mask', True), bool)
  if 'query_points' in batch:
    _validate_points(batch, examples, image_size or _image_size(batch))
  if 'boxes' in batch:
    boxes = np.asarray(batch['boxes'])
    valid = np.asarray(batch['boxes_valid'], bool) & _expand(examples, boxes.ndim - 2)
    chosen = boxes[valid]
    if not np.all(np.isfinite(chosen)):
      raise ValueError('boxes: non-finite values in valid boxes.')
    if np.any((chosen < 0) | (chosen > 1)):
      raise ValueError('boxes: valid boxes must be normalised to [0, 1].')
    if np.any(chosen[:, 0] > chosen[:, 2]) or np.any(chosen[:, 1] > chosen[:, 3]):
      raise ValueError('boxes: valid boxes need ymin <= ymax and xmin <= xmax.')


def _image_size(batch: Mapping[str, np.ndarray]) -> tuple[int, int]:
  for key in ('video', 'depth'):
    if key in batch:
      return tuple(np.shape(batch[key])[-3:-1])
  raise ValueError('validate_readout_batch needs image_size when the batch has no video.')


def _expand(examples: np.ndarray, num_trailing: int) -> np.ndarray:
  return np.reshape(examples, np.shape(examples) + (1,) * num_trailing)


def _validate_points(
    batch: Mapping[str, np.ndarray], examples: np.ndarray, image_size: tuple[int, int]
) -> None:
  query_points = np.asarray(batch['query_points'])
  occluded = np.asarray(batch['occluded'], bool)
  target_points = np.asarray(batch['target_points'])
  valid = np.asarray(batch.get('tracks_valid', True), bool) & _expand(examples, 1)
  valid = np.broadcast_to(valid, query_points.shape[:-1])
  num_frames = occluded.shape[-1]
  height, width = image_size

  queries = query_points[valid]
  if not np.all(np.isfinite(queries)):
    raise ValueError('query_points: non-finite values in valid tracks.')
  query_frame = np.round(queries[:, 0])
  if np.any((query_frame < 0) | (query_frame >= num_frames)):
    raise ValueError(f'query_points: query frame outside the clip [0, {num_frames}).')
  if np.any((queries[:, 1] < 0) | (queries[:, 1] > height)):
    raise ValueError(f'query_points: y outside the frame [0, {height}].')
  if np.any((queries[:, 2] < 0) | (queries[:, 2] > width)):
    raise ValueError(f'query_points: x outside the frame [0, {width}].')
  if not np.all(np.isfinite(target_points[valid][~occluded[valid]])):
    raise ValueError('target_points: non-finite values on visible frames of valid tracks.')
  if np.any(np.all(occluded[valid], axis=-1)):
    raise ValueError(
        'occluded: a valid track is never visible; mark it tracks_valid=False instead.'
    )
