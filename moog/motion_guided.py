"""Motion-guided MooG: the corrector only sees encoder tokens whose pixels changed.

Motion score. For frame t >= 1 the score of encoder token (i, j) is the mean absolute
frame difference over the token's pixel footprint and the colour channels,

  score[t, i, j] = mean_{y, x in patch(i, j), c} |x_t[y, x, c] - x_{t-1}[y, x, c]|,

with patch(i, j) the s x s block rows [s*i, s*i + s), columns [s*j, s*j + s) and s the
encoder's total stride (`FrameEncoder.total_stride`); tokens are in the encoder's raster
order n = i * (W / s) + j. Scores are in the units of the video ([0, 1] RGB). Frame 0
has no predecessor: it scores +inf and is always kept in full. This is
`mgtc.selection.motion_scores` with patch size s and tubelets of one frame.

Selection (`config.motion_guided.mode`):
  * 'off': no mask; the model runs exactly as plain MooG (bit-identical).
  * 'ratio': in every frame t >= 1 the k = floor(r * N) lowest-scoring tokens are
    dropped, keeping K = N - k. Ties go to the lower raster index (`jax.lax.top_k`), so
    a static frame keeps tokens 0 .. K-1.
  * 'threshold': a token of frame t >= 1 is kept iff its score > tau (so a static frame
    keeps nothing and the corrector's cross-attention contributes only its output bias).
The result is the boolean `encoder_token_mask` [*b, T, N] of `MooG.__call__`.

Cost. The conv encoder still computes features at every position: dropping positions
before the convs would need a gather of irregular patches and would change the convs'
receptive fields (a 3x3 conv reads its neighbours), and the conv cost is per frame and
dense, so nothing is saved there and skipping is not attempted. Only the corrector's
cross-attention depends on the encoder tokens (the k/v projections and the q.k / attn.v
products scale with their number); the corrector's self-attention and MLP over the
state tokens do not. A key mask leaves the FLOPs unchanged (masked keys are still
multiplied), so ratio mode also has a gather path (`GatheredMotionGuidedMooG`,
`config.motion_guided.gather=True`): frames t >= 1 pass only their K kept tokens
(static shape) to the corrector, which gives the same outputs as the mask and really
lowers the cost. `corrector_gmacs` counts it: for the paper sizes (1024 state tokens x
512, 1024 encoder tokens at 128^2, 2-layer corrector) dropping 50% of the encoder
tokens leaves 87.5% of the corrector's multiply-adds, not ~50% (XLA's count of the
corrector alone gives 0.8747).
"""

from __future__ import annotations

import einops
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int
import ml_collections

from mgtc import selection
from moog import model as moog_model

MODES = ('off', 'ratio', 'threshold')


def default_config() -> ml_collections.ConfigDict:
  """`config.motion_guided`: off by default.

  Fields:
    mode: 'off', 'ratio' or 'threshold' (see the module docstring).
    drop_ratio: r in [0, 1), tokens dropped per frame t >= 1 in ratio mode.
    threshold: tau, in [0, 1] pixel units; threshold mode keeps score > tau.
    gather: ratio mode only: pass the K kept tokens to the corrector instead of masking.
  """
  return ml_collections.ConfigDict(
      dict(mode='off', drop_ratio=0.5, threshold=0.02, gather=False)
  )


def validate_config(motion_config: ml_collections.ConfigDict, backbone: str) -> None:
  """Raises ValueError naming the offending `config.motion_guided.*` field."""
  if motion_config.mode not in MODES:
    raise ValueError(f'config.motion_guided.mode={motion_config.mode!r} must be one of {MODES}.')
  if not 0.0 <= motion_config.drop_ratio < 1.0:
    raise ValueError(
        f'config.motion_guided.drop_ratio={motion_config.drop_ratio} is outside [0, 1).'
    )
  if motion_config.gather and (motion_config.mode != 'ratio' or backbone != 'moog'):
    raise ValueError(
        'config.motion_guided.gather=True needs mode=\'ratio\' (a static token count) and '
        f"backbone='moog', got mode={motion_config.mode!r}, backbone={backbone!r}."
    )


def token_motion_scores(video: Float[Array, '*b T H W C'], stride: int) -> Float[Array, '*b T N']:
  """Per-token motion scores in raster order; frame 0 is +inf (module docstring)."""
  batch_shape = video.shape[:-4]
  flat_video = video.reshape((-1,) + video.shape[-4:])
  scores = selection.motion_scores(flat_video, patch_size=stride, tubelet_size=1)
  scores = einops.rearrange(scores, 'b t h w -> b t (h w)')
  return scores.reshape(batch_shape + scores.shape[1:])


def num_kept_tokens(num_tokens: int, drop_ratio: float) -> int:
  """K = N - floor(r * N), the static per-frame keep count of ratio mode."""
  return num_tokens - selection.num_tokens_to_drop(num_tokens, drop_ratio)


def kept_token_indices(
    scores: Float[Array, '*b T N'], drop_ratio: float
) -> Int[Array, '*b T-1 K']:
  """Ratio mode: the K highest scores of each frame t >= 1 (frame 0 is kept in full).

  Returns:
    Raster indices in increasing order; ties go to the lower index.
  """
  scores = scores[..., 1:, :]
  num_keep = num_kept_tokens(scores.shape[-1], drop_ratio)
  flat_scores = scores.reshape((-1, scores.shape[-1]))
  indices = selection.select_top_tokens(flat_scores, num_keep)
  return indices.reshape(scores.shape[:-1] + (num_keep,))


def encoder_token_mask(
    video: Float[Array, '*b T H W C'], stride: int, motion_config: ml_collections.ConfigDict
) -> Bool[Array, '*b T N'] | None:
  """The corrector's key mask for `config.motion_guided`; None when mode is 'off'.

  Args:
    video: RGB frames in [0, 1].
    stride: the encoder's total stride s (token footprint s x s).
    motion_config: `config.motion_guided`.

  Returns:
    True = the corrector sees that encoder token. Frame 0 is all True.
  """
  if motion_config.mode == 'off':
    return None
  scores = token_motion_scores(video, stride)
  if motion_config.mode == 'threshold':
    return scores > motion_config.threshold
  if motion_config.mode == 'ratio':
    indices = kept_token_indices(scores, motion_config.drop_ratio)
    flat_indices = indices.reshape((-1, indices.shape[-1]))
    rows = jnp.arange(flat_indices.shape[0])[:, None]
    later = jnp.zeros((flat_indices.shape[0], scores.shape[-1]), bool)
    later = later.at[rows, flat_indices].set(True).reshape(indices.shape[:-1] + (-1,))
    first = jnp.ones_like(later[..., :1, :])
    return jnp.concatenate([first, later], axis=-2)
  raise ValueError(f'config.motion_guided.mode={motion_config.mode!r} must be one of {MODES}.')


def gather_kept_tokens(
    encoder_tokens: Float[Array, '*b T N D'], indices: Int[Array, '*b T K']
) -> Float[Array, '*b T K D']:
  """Gathers the kept encoder tokens of every frame."""
  return jnp.take_along_axis(encoder_tokens, indices[..., None], axis=-2)


class GatheredMotionGuidedMooG(moog_model.MooG):
  """MooG in ratio mode whose corrector receives only the K kept tokens of frames t >= 1.

  Frame 0 (full, N tokens) runs as the first step, frames 1 .. T-1 (K tokens each, a
  static shape) in the scan. Outputs equal `MooG` with the ratio-mode
  `encoder_token_mask` (tested) up to float rounding; in training the 'default' rng is
  split differently, so the random draws (not their distribution) differ.

  Attributes:
    drop_ratio: r; each frame t >= 1 keeps K = N - floor(r * N) encoder tokens.
  """

  drop_ratio: float = 0.5

  def __call__(
      self,
      video: Float[Array, '*b T H W 3'],
      *,
      train: bool,
      state: Float[Array, '*b n d'] | None = None,
  ) -> dict[str, Float[Array, '...']]:
    """As `MooG.__call__` without `encoder_token_mask` (motion decides it)."""
    self._check_inputs(video, state, None, train)
    batch_shape = video.shape[:-4]
    time_axis = len(batch_shape)
    encoder_tokens = self.encode(video)
    indices = kept_token_indices(
        token_motion_scores(video, self.encoder.total_stride), self.drop_ratio
    )
    later_tokens = gather_kept_tokens(encoder_tokens[..., 1:, :, :], indices)
    if state is None:
      state = self.initial_state(batch_shape)
    state = state.astype(self.dtype)

    state, first = self.step(
        state, encoder_tokens[..., 0, :, :], video[..., 0, :, :, :], train=train
    )
    time_major = lambda x: jnp.moveaxis(x, time_axis, 0)
    later_frames = video[..., 1:, :, :, :]
    final_state, later = self.scan_steps(
        state, (time_major(later_tokens), time_major(later_frames), None), train=train
    )
    outputs = {
        name: jnp.concatenate(
            [jnp.expand_dims(first[name], time_axis), jnp.moveaxis(later[name], 0, time_axis)],
            axis=time_axis,
        )
        for name in first
    }
    return moog_model.with_state_outputs(outputs, final_state)


def gathered_from(moog: moog_model.MooG, drop_ratio: float) -> GatheredMotionGuidedMooG:
  """The gather-path model with exactly `moog`'s submodules and parameter tree."""
  return moog_model.rebuild_as(GatheredMotionGuidedMooG, moog, drop_ratio=drop_ratio)


def corrector_gmacs(
    *,
    num_state_tokens: int,
    state_dim: int,
    num_encoder_tokens: int,
    encoder_dim: int,
    num_layers: int,
    qkv_size: int,
    mlp_dim: int,
) -> float:
  """Analytic corrector multiply-adds per frame, in G (fvcore convention: 1 MAC = 1 FLOP).

  Per block (n state tokens of width d, m encoder tokens of width e, attention width q):
  self-attention 4 n d q (q, k, v, output projections) + 2 n^2 q (q.k, attn.v);
  cross-attention 2 n d q (query and output projections) + 2 m e q (key and value
  projections) + 2 n m q; MLP 2 n d mlp_dim. Norms, softmax, biases and residuals are
  not counted. Only the terms in m change when encoder tokens are dropped (gather path).
  """
  n, d, m, e, q = num_state_tokens, state_dim, num_encoder_tokens, encoder_dim, qkv_size
  self_attention = 4 * n * d * q + 2 * n * n * q
  cross_attention = 2 * n * d * q + 2 * m * e * q + 2 * n * m * q
  mlp = 2 * n * d * mlp_dim
  return num_layers * (self_attention + cross_attention + mlp) / 1e9


def corrector_gmacs_for_config(
    model_config: ml_collections.ConfigDict, resolution: int, drop_ratio: float = 0.0
) -> float:
  """`corrector_gmacs` for `config.model` at `resolution`, with K = N - floor(r N) keys."""
  stride = 1
  for s in model_config.encoder_strides:
    stride *= s
  num_encoder_tokens = (resolution // stride) ** 2
  if model_config.encoder_pos_embedding == 'project_add':
    encoder_dim = model_config.token_dim
  else:
    encoder_dim = model_config.encoder_channels[-1] + 4 * model_config.encoder_fourier_bases
  return corrector_gmacs(
      num_state_tokens=model_config.num_tokens,
      state_dim=model_config.token_dim,
      num_encoder_tokens=num_kept_tokens(num_encoder_tokens, drop_ratio),
      encoder_dim=encoder_dim,
      num_layers=model_config.corrector.num_layers,
      qkv_size=model_config.corrector.qkv_size,
      mlp_dim=model_config.corrector.mlp_dim,
  )
