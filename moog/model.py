"""The MooG recurrent video model, its loss and metric, and its configs.

MooG ("Moving Off-the-Grid", arXiv 2411.05927) keeps a set of latent tokens that are
not tied to the pixel grid and trains them with next-frame pixel prediction. For every
frame t, starting from the state `s_{t-1}` (`s_{-1}` = normed noise):

1. predict:  `p_t = s_{t-1} + Predictor(s_{t-1})`;
2. decode `p_t` at (subsampled) pixel coordinates; the loss compares this prediction
   with frame t, which the model has not seen yet (frame 0 is predicted from the random
   initial state alone and its loss counts);
3. correct:  `c_t = LN_1e-4(p_t + Corrector(p_t, Enc(frame_t)))`;
4. carry:    `s_t = c_t`.

Typical use::

  model = build_moog(config.model)
  variables = model.init({'params': k1, 'default': k2}, video, train=True)
  outputs = model.apply(variables, video, train=True, rngs={'default': k3})
  loss = l2_loss(outputs)

RNG streams: 'params' (init only) and 'default' (random initial state; random lattice
offsets in training). At evaluation the offsets are 0, so 'default' is only needed when
no `state` is passed.
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
from flax.typing import Dtype
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float
import ml_collections

from moog import modules
from videolib import checkpoint

STATE_NORM_EPSILON = 1e-4
# Fields added to `config.model` after runs existed, at the value those runs used.
checkpoint.register_added_config_fields({'model.decoder_self_attention': False,
                                          'model.state_init': 'noise',
                                          'model.attention_impl': 'explicit'})
# Loop unrolling, rematerialisation and the attention kernel change speed and memory, not
# the function: a run resumes, or initialises another, whatever their values.
checkpoint.register_execution_only_config_fields(
    ('model.scan_unroll', 'model.remat', 'model.attention_impl'))
# `config.model.compute_dtype` -> the Flax modules' `dtype`; parameters stay float32.
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class MooG(nn.Module):
  """MooG: recurrent predict / decode / correct over the frames of a video.

  Parameters live under the top-level names `encoder`, `predictor`, `corrector`,
  `decoder` and `state_norm`.

  Decisions the public sources leave open:
  * The recurrence is a `flax.linen.scan` over time (upstream unrolls a Python loop;
    the maths are identical). Parameters are broadcast across steps; the 'default'
    rng is split per step, so lattice offsets are redrawn for every frame.
  * `remat=True` wraps the whole time step (predict, decode, correct) in `nn.remat`
    inside the scan, so the backward pass keeps only the carried state per frame and
    recomputes the step's activations (the paper trains with gradient checkpointing;
    the released config does not). Outputs and gradients are unchanged.
  * All frames are encoded before the scan, in one batched call (no temporal mixing).
  * Values sown inside the time loop into 'intermediates' (attention weights with
    `mutable=['intermediates']`, every submodule's output with
    `capture_intermediates=True`) are stacked over time on a new leading axis; values
    sown before the loop (the encoder's, the initial state's norm) keep their shapes.
  * `dtype=bfloat16` (config `compute_dtype`) runs every layer in bfloat16 with float32
    parameters; the state is carried in bfloat16, the decoded pixels (and so the loss)
    stay float32.

  Attributes:
    encoder: per-frame encoder, `[*b, H, W, 3] -> [*b, N_enc, D_enc]`.
    predictor: self-attention transformer on the state.
    corrector: self- plus cross-attention transformer (queries: predicted state,
      keys/values: the raw encoder tokens of the current frame).
    decoder: pixel decoder (cross-attention only unless built with self_attention).
    num_tokens: number of state tokens n.
    token_dim: state width d.
    state_init_scale: std of the non-learned initial noise before the state norm.
    state_init: 'noise' (the paper's: `LN(scale * N(0, 1))`, no identity per token) or
      'learned' (`LN(tokens + scale * N(0, 1))` with learned `initial_tokens` [n, d]: each
      token starts from its own learned vector, so the corrector's queries differ from
      the first frame and the tokens need not break their symmetry through noisy
      gradients; see configs/moog_tiny.py).
    subsample_factor_train: decoder lattice stride in training (random phase).
    subsample_factor_eval: decoder lattice stride at evaluation (phase 0).
    remat: rematerialise each time step in the backward pass.
    dtype: computation dtype of the state norm; the submodules carry their own (set
      consistently by `build_moog`).
    scan_unroll: time steps per iteration of the scan's loop (`lax.scan`'s `unroll`);
      1 keeps one rolled loop, 0 unrolls the whole clip, whatever its length. Full
      unrolling gives XLA one straight-line program: more compile time, possibly
      faster steps, and an exact FLOP count (XLA's cost analysis counts a loop body
      once, whatever its trip count).
    return_corrected_prenorm: also return `states_corrected_prenorm`, the corrected
      states before the state LayerNorm (the features the released Ego4D heads read;
      see `step`). Off by default, so training memory and every other output are
      unchanged; set it on a copy, e.g. `model.clone(return_corrected_prenorm=True)`.
  """

  encoder: modules.FrameEncoder
  predictor: modules.Transformer
  corrector: modules.Transformer
  decoder: modules.PixelDecoder
  num_tokens: int
  token_dim: int
  state_init_scale: float = 1e-4
  state_init: str = 'noise'
  subsample_factor_train: int = 8
  subsample_factor_eval: int = 4
  remat: bool = False
  dtype: Dtype = jnp.float32
  return_corrected_prenorm: bool = False
  scan_unroll: int = 1

  def setup(self):
    # Shared by the initial state and every correction step.
    self.state_norm = nn.LayerNorm(
        epsilon=STATE_NORM_EPSILON, use_bias=False, use_scale=True, dtype=self.dtype
    )
    if self.state_init == 'learned':
      self.initial_tokens = self.param('initial_tokens', nn.initializers.normal(1.0),
                                       (self.num_tokens, self.token_dim))
    elif self.state_init != 'noise':
      raise ValueError(f"state_init must be 'noise' or 'learned', got {self.state_init!r}.")

  def initial_state(self, batch_shape: tuple[int, ...]) -> Float[Array, '*b n d']:
    """Normed noise `LN(scale * N(0, 1))`, fresh per sample and call, around the learned
    `initial_tokens` when `state_init='learned'`."""
    noise = self.state_init_scale * jax.random.normal(
        self.make_rng('default'), batch_shape + (self.num_tokens, self.token_dim)
    )
    if self.state_init == 'learned':
      noise = noise + self.initial_tokens
    return self.state_norm(noise)

  def encode(self, video: Float[Array, '*b T H W 3']) -> Float[Array, '*b T N D']:
    """Encodes every frame independently."""
    return self.encoder(video)

  def predict(self, state: Float[Array, '*b n d']) -> Float[Array, '*b n d']:
    """`p = s + Predictor(s)`: the residual sits outside the transformer."""
    return state + self.predictor(state)

  def correct_prenorm(
      self,
      predicted: Float[Array, '*b n d'],
      encoder_tokens: Float[Array, '*b N D'],
      encoder_token_mask: Bool[Array, '*b N'] | None = None,
  ) -> Float[Array, '*b n d']:
    """`p + Corrector(p, tokens)`, before the state norm; masked tokens are invisible."""
    update = self.corrector(predicted, inputs_kv=encoder_tokens, kv_mask=encoder_token_mask)
    return predicted + update

  def correct(
      self,
      predicted: Float[Array, '*b n d'],
      encoder_tokens: Float[Array, '*b N D'],
      encoder_token_mask: Bool[Array, '*b N'] | None = None,
  ) -> Float[Array, '*b n d']:
    """`c = LN_1e-4(p + Corrector(p, tokens))`; masked tokens are invisible.

    Variants (`moog/grid_baselines.py`) override `correct_prenorm`, not this.
    """
    return self.state_norm(self.correct_prenorm(predicted, encoder_tokens, encoder_token_mask))

  def decode(
      self, state: Float[Array, '*b n d'], coords: Float[Array, '*#b h w 2']
  ) -> Float[Array, '*b h w 3']:
    """Decodes RGB at arbitrary (y, x) coordinates in [-1, 1]."""
    return self.decoder(state, coords)

  def decode_frame(
      self, state: Float[Array, '*b n d'], height: int, width: int
  ) -> Float[Array, '*b height width 3']:
    """Decodes a full frame at any resolution (e.g. for summaries and readouts)."""
    return self.decoder(state, modules.grid_coordinates(height, width))

  def _decode_subsampled(
      self, predicted: Float[Array, '*b n d'], frame: Float[Array, '*b H W 3'], train: bool
  ) -> tuple[Float[Array, '*b h w 3'], Float[Array, '*b h w 3']]:
    """Decodes on the (random-phase in training) pixel lattice; returns (pred, target)."""
    factor = self.subsample_factor_train if train else self.subsample_factor_eval
    batch_shape = frame.shape[:-3]
    height, width = frame.shape[-3:-1]
    grid = modules.grid_coordinates(height, width)
    if train and factor > 1:
      offsets = modules.sample_lattice_offsets(self.make_rng('default'), batch_shape, factor)
      coords = jnp.broadcast_to(grid, batch_shape + grid.shape)
    else:
      offsets = None
      coords = grid  # One lattice shared by the batch; the decoder broadcasts it.
    coords = modules.lattice_subsample(coords, factor, offsets)
    targets = modules.lattice_subsample(frame, factor, offsets)
    return self.decode(predicted, coords), targets

  def _check_inputs(self, video, state, encoder_token_mask, train) -> None:
    num_frames, height, width = video.shape[-4:-1]
    if num_frames < 2 and state is None:
      raise ValueError(
          f'video has {num_frames} frame(s); MooG needs at least 2 (a single frame can only'
          ' continue a stream, i.e. with `state` given).'
      )
    stride = self.encoder.total_stride
    if height % stride or width % stride:
      raise ValueError(
          f'Frame size {height}x{width} is not divisible by the total encoder stride {stride}'
          f' (model.encoder_strides={tuple(self.encoder.strides)}).'
      )
    field = 'subsample_factor_train' if train else 'subsample_factor_eval'
    factor = getattr(self, field)
    if height % factor or width % factor:
      raise ValueError(
          f'Frame size {height}x{width} is not divisible by model.{field}={factor}.'
      )
    batch_shape = video.shape[:-4]
    if state is not None:
      chex.assert_shape(state, batch_shape + (self.num_tokens, self.token_dim))
    if encoder_token_mask is not None:
      chex.assert_shape(encoder_token_mask, batch_shape + (num_frames, None))

  def __call__(
      self,
      video: Float[Array, '*b T H W 3'],
      *,
      train: bool,
      state: Float[Array, '*b n d'] | None = None,
      encoder_token_mask: Bool[Array, '*b T N'] | None = None,
  ) -> dict[str, Float[Array, '...']]:
    """Runs MooG over a video (or a chunk of a stream).

    Args:
      video: RGB frames in [0, 1].
      train: training mode: subsample the decoder by `subsample_factor_train` with
        random offsets; otherwise `subsample_factor_eval` with offset 0.
      state: optional state carried from a previous chunk; replaces the random
        initial state (it is already normed, so it is used as is).
      encoder_token_mask: optional key mask for the corrector's cross-attention;
        False hides that encoder token. All-True is identical to None.

    Returns:
      A dict with
        `video_predicted`, `subsampled_targets`: `[*b, T, h, w, 3]` with
          `h = H / factor`; prediction of frame t from frames < t, and frame t on the
          same lattice;
        `states_predicted`, `states_corrected`: `[*b, T, n, d]`;
        `states_concat`: `[*b, T, 2n, d]`, predicted then corrected tokens;
        `state`: `[*b, n, d]`, the final corrected state (input to the next chunk);
        `states_corrected_prenorm`: `[*b, T, n, d]`, only with
          `return_corrected_prenorm` (see `step`).
    """
    self._check_inputs(video, state, encoder_token_mask, train)
    batch_shape = video.shape[:-4]
    time_axis = len(batch_shape)

    encoder_tokens = self.encode(video)
    if state is None:
      state = self.initial_state(batch_shape)
    # The scan carry must keep one dtype: a float32 state from a previous chunk is cast.
    state = state.astype(self.dtype)
    time_major = lambda x: None if x is None else jnp.moveaxis(x, time_axis, 0)
    final_state, per_step = self.scan_steps(
        state,
        (time_major(encoder_tokens), time_major(video), time_major(encoder_token_mask)),
        train=train,
    )
    outputs = {name: jnp.moveaxis(value, 0, time_axis) for name, value in per_step.items()}
    return with_state_outputs(outputs, final_state)

  def step(
      self,
      state: Float[Array, '*b n d'],
      encoder_tokens: Float[Array, '*b N D'],
      frame: Float[Array, '*b H W 3'],
      *,
      train: bool,
      encoder_token_mask: Bool[Array, '*b N'] | None = None,
  ) -> tuple[Float[Array, '*b n d'], dict[str, Float[Array, '...']]]:
    """One time step: predict, decode the prediction against `frame`, correct.

    Returns the corrected state (the next carry) and this frame's `video_predicted`,
    `subsampled_targets`, `states_predicted` and `states_corrected`; with
    `return_corrected_prenorm` also `states_corrected_prenorm`, the corrected state
    before the state LayerNorm: `x_t = p_t + Corrector(p_t, Enc(frame_t))`, so that
    `states_corrected = LN_1e-4(states_corrected_prenorm)` exactly (same ops).

    Relation to the released Ego4D colab (representations4d `moog_inference_demo`),
    whose step is `s = LN(x_{t-1}); s = s + Predictor(s); x_t = s + Corrector(s, e_t)`
    from the raw noise `x_{-1} = 1e-4 · N(0, 1)`, with the heads reading `x_0 .. x_{T-1}`
    ("corrected states of frames 1..T before the next LayerNorm", docs/moog_reference.md §12):
    * Equal: the same operations in the same order. Moving the colab's leading LN to
      the end of the previous step gives this recurrence: `s_{t-1} = LN(x_{t-1})` is
      this model's carried state, so `states_corrected_prenorm[t] = x_t` (the heads'
      features) and `states_corrected[t] = LN(x_t)` (the colab's normed state at the
      start of step t + 1); the initial state `LN(1e-4 · N(0, 1))` is what the colab's
      first step normalises. Tested against a literal colab-order loop in
      `tests/test_ego4d.py` with the same noise.
    * Differs: (1) the noise sample: both draw 1e-4 · N(0, 1) from the 'default' rng,
      but Flax derives the key from the module path, so one seed gives different draws
      (upstream's inference is stochastic in the same way); to reproduce a given noise,
      pass `state=LN(noise)`. (2) The returned final `state` is normed here and raw
      (`x_{T-1}`) in the colab; this model's chunked inference passes the normed one,
      which is the colab's next step after its LN. (3) The colab never decodes at
      inference; this step also decodes `p_t` (its output is unused by the heads).
    """
    predicted = self.predict(state)
    video_predicted, targets = self._decode_subsampled(predicted, frame, train)
    outputs = dict(video_predicted=video_predicted, subsampled_targets=targets,
                   states_predicted=predicted)
    prenorm = self.correct_prenorm(predicted, encoder_tokens, encoder_token_mask)
    corrected = self.state_norm(prenorm)
    if self.return_corrected_prenorm:
      outputs['states_corrected_prenorm'] = prenorm
    outputs['states_corrected'] = corrected
    return corrected, outputs

  def scan_steps(self, state, time_major_inputs, *, train: bool):
    """Scans `step` over time-major `(encoder_tokens, frames, encoder_token_masks)`.

    The masks may be None. Returns the final state and the per-step outputs stacked on
    a new leading time axis. Every number of encoder tokens works, so callers that
    gather a subset of tokens per frame (`moog/motion_guided.py`) reuse this loop.
    """

    def body(model: MooG, carry, inputs):
      tokens, frame, token_mask = inputs
      return model.step(carry, tokens, frame, train=train, encoder_token_mask=token_mask)

    if self.remat:
      # Inside a scan there is no common-subexpression hazard, so skip the barrier.
      body = nn.remat(body, prevent_cse=False)
    scan = nn.scan(
        body,
        variable_broadcast='params',
        variable_axes={'intermediates': 0},
        split_rngs={'params': False, 'default': True},
        in_axes=0,
        out_axes=0,
        unroll=self.scan_unroll or time_major_inputs[0].shape[0],
    )
    if self.is_mutable_collection('intermediates'):
      scan = _outside_intermediates_kept_apart(scan)
    return scan(self, state, time_major_inputs)


def _outside_intermediates_kept_apart(scan):
  """Hides intermediates sown before the scan from it, then merges them back.

  The scan maps its 'intermediates' over time, so values sown earlier in the call
  (the encoder's, the initial state's norm under `capture_intermediates=True`) would be
  split along a time axis they do not have. A module sown both before and inside the
  scan keeps sow's append order: its earlier values, then the scan's stacked ones.
  """
  outside = {}

  def hide(intermediates):
    outside.update(intermediates)
    return {}

  def merge(inside):
    return _merge_sown(outside, inside)

  return nn.map_variables(scan, 'intermediates', trans_in_fn=hide, trans_out_fn=merge,
                          mutable=True)


def _merge_sown(first, second):
  """Merges two sown trees; where both hold a tuple, the tuples are concatenated."""
  merged = dict(first)
  for name, value in second.items():
    if name not in merged:
      merged[name] = value
    elif isinstance(value, tuple):
      merged[name] = tuple(merged[name]) + value
    else:
      merged[name] = _merge_sown(merged[name], value)
  return merged


def rebuild_as(cls: type[MooG], moog: MooG, **extra_fields) -> MooG:
  """A `cls` (a MooG subclass) with `moog`'s submodules and settings.

  The parameter tree is therefore identical, so variants (grid baselines, the
  motion-guided gather path) load and share MooG checkpoints.
  """
  fields = {field.name: getattr(moog, field.name) for field in dataclasses.fields(moog)
            if field.init and field.name not in ('parent', 'name')}
  return cls(**fields, **extra_fields)


def with_state_outputs(
    outputs: dict[str, jax.Array], final_state: Float[Array, '*b n d']
) -> dict[str, jax.Array]:
  """Adds `states_concat` (predicted then corrected tokens) and the final `state`."""
  outputs['states_concat'] = jnp.concatenate(
      [outputs['states_predicted'], outputs['states_corrected']], axis=-2
  )
  outputs['state'] = final_state
  return outputs


# ----------------------------------------------------------------------------------------
# Loss and metric.
# ----------------------------------------------------------------------------------------


def l2_loss(outputs: dict[str, jax.Array]) -> Float[Array, '']:
  """Mean squared error over every element of `[*b, T, h, w, 3]`, all frames included."""
  return jnp.mean(jnp.square(outputs['video_predicted'] - outputs['subsampled_targets']))


def mean_colour_prediction(frames: Float[Array, '*b h w c']) -> Float[Array, '*b h w c']:
  """Each frame replaced by its own mean colour: the best spatially constant prediction."""
  return jnp.broadcast_to(jnp.mean(frames, axis=(-3, -2), keepdims=True), frames.shape)


def psnr_per_image(
    predictions: Float[Array, '*b h w c'],
    targets: Float[Array, '*b h w c'],
    data_range: float = 1.0,
) -> Float[Array, '*b']:
  """PSNR of each image (MSE over h, w, c); MSE floored at 1e-10 so exact matches stay finite."""
  mse = jnp.mean(jnp.square(predictions - targets), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10))


def psnr(
    predictions: Float[Array, '*b h w c'],
    targets: Float[Array, '*b h w c'],
    data_range: float = 1.0,
) -> Float[Array, '']:
  """PSNR per image, averaged over all leading axes."""
  return jnp.mean(psnr_per_image(predictions, targets, data_range))


# ----------------------------------------------------------------------------------------
# Configs and construction.
# ----------------------------------------------------------------------------------------


def _transformer_config(num_layers, num_heads, qkv_size, mlp_dim) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      dict(num_layers=num_layers, num_heads=num_heads, qkv_size=qkv_size, mlp_dim=mlp_dim)
  )


def paper_movi_model_config() -> ml_collections.ConfigDict:
  """The released MOVi configuration (34,726,787 parameters).

  `remat` is on: the paper trains with gradient checkpointing (the released config has
  none); it changes memory and speed only.
  """
  return ml_collections.ConfigDict(
      dict(
          num_tokens=1024,
          token_dim=512,
          encoder_channels=(64, 128, 128, 256, 256, 512),
          encoder_strides=(1, 1, 1, 2, 1, 2),
          encoder_pos_embedding='project_add',
          encoder_fourier_bases=20,
          decoder_fourier_bases=16,
          predictor=_transformer_config(3, 4, 256, 2048),
          corrector=_transformer_config(2, 8, 512, 2048),
          decoder=_transformer_config(6, 2, 128, 2048),
          subsample_factor_train=8,
          subsample_factor_eval=4,
          remat=True,
          scan_unroll=1,
          state_init_scale=1e-4,
          state_init='noise',
          compute_dtype='float32',
          attention_impl='explicit',
      )
  )


def ego4d_model_config() -> ml_collections.ConfigDict:
  """The released Ego4D checkpoint's backbone shape (35,193,811 parameters).

  Differences from MOVi: conv strides 2, 1, 1, 2, 1, 1 and a concatenated encoder PE
  (tokens are 512 + 80 = 592 wide). The decoder stays cross-attention only, as in the
  training code (the colab never runs its decoder).

  `decoder_self_attention` (only this config has the field; `build_moog` reads a missing
  one as False, so older configs and their checkpoints are unchanged): True gives the
  decoder blocks a self-attention too (36,967,507 parameters), the layout of the colab's
  decoder class. Set it if a released file holds `decoder/transformer/layer_*/self_att`
  weights (`moog/released/npz_io.py` says so when loading fails on them). False is kept because
  the upstream README sizes the backbone file at 35M / 140 MB, which matches the
  cross-attention-only decoder (35.19M x 4 bytes), not 37.0M / 148 MB.
  """
  config = paper_movi_model_config()
  config.encoder_strides = (2, 1, 1, 2, 1, 1)
  config.encoder_pos_embedding = 'concat'
  config.decoder_self_attention = False
  return config


def tiny_model_config() -> ml_collections.ConfigDict:
  """A few-thousand-parameter model for tests and smoke runs (16x16 frames and up)."""
  return ml_collections.ConfigDict(
      dict(
          num_tokens=8,
          token_dim=32,
          encoder_channels=(16, 32),
          encoder_strides=(2, 2),
          encoder_pos_embedding='project_add',
          encoder_fourier_bases=4,
          decoder_fourier_bases=4,
          predictor=_transformer_config(1, 2, 32, 64),
          corrector=_transformer_config(1, 2, 32, 64),
          decoder=_transformer_config(1, 2, 32, 64),
          subsample_factor_train=4,
          subsample_factor_eval=2,
          remat=False,
          scan_unroll=1,
          state_init_scale=1e-4,
          state_init='noise',
          compute_dtype='float32',
          attention_impl='explicit',
      )
  )


def decoder_width(model_config: ml_collections.ConfigDict) -> int:
  """Decoder query width: zeros(token_dim) plus a (y, x) Fourier PE of 4 * bases."""
  return model_config.token_dim + 4 * model_config.decoder_fourier_bases


def validate_model_config(model_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the offending `model.*` field."""
  c = model_config
  for field in ('num_tokens', 'token_dim', 'encoder_fourier_bases', 'decoder_fourier_bases'):
    if c[field] < 1:
      raise ValueError(f'model.{field} must be positive, got {c[field]}.')
  compute_dtype = c.get('compute_dtype', 'float32')
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(
        f'model.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {compute_dtype!r}.'
    )
  attention_impl = c.get('attention_impl', 'explicit')
  if attention_impl not in modules.ATTENTION_IMPLS:
    raise ValueError(
        f'model.attention_impl must be one of {modules.ATTENTION_IMPLS}, got {attention_impl!r}.'
    )
  if c.encoder_pos_embedding not in ('project_add', 'concat'):
    raise ValueError(
        "model.encoder_pos_embedding must be 'project_add' or 'concat',"
        f' got {c.encoder_pos_embedding!r}.'
    )
  if len(c.encoder_channels) != len(c.encoder_strides) or not c.encoder_channels:
    raise ValueError(
        f'model.encoder_channels {tuple(c.encoder_channels)} and model.encoder_strides'
        f' {tuple(c.encoder_strides)} must be non-empty and of equal length.'
    )
  if any(s < 1 for s in c.encoder_strides):
    raise ValueError(f'model.encoder_strides must be positive, got {tuple(c.encoder_strides)}.')
  if c.get('scan_unroll', 1) < 0:
    raise ValueError(
        f'model.scan_unroll must be >= 0 (1 = a rolled loop, 0 = the whole clip unrolled),'
        f' got {c.scan_unroll}.')
  for field in ('subsample_factor_train', 'subsample_factor_eval'):
    if c[field] < 1:
      raise ValueError(f'model.{field} must be >= 1 (1 = no subsampling), got {c[field]}.')
  widths = {
      'predictor': ('token_dim', c.token_dim),
      'corrector': ('token_dim', c.token_dim),
      'decoder': ('token_dim + 4 * decoder_fourier_bases', decoder_width(c)),
  }
  for part, (width_name, width) in widths.items():
    heads = c[part].num_heads
    if heads < 1 or c[part].num_layers < 0 or c[part].mlp_dim < 1:
      raise ValueError(f'model.{part} has invalid sizes: {c[part].to_dict()}.')
    if width % heads:
      raise ValueError(
          f'model.{part}.num_heads={heads} does not divide the {part} width'
          f' {width} (model.{width_name}).'
      )
    if c[part].qkv_size % heads:
      raise ValueError(
          f'model.{part}.qkv_size={c[part].qkv_size} is not divisible by'
          f' model.{part}.num_heads={heads}.'
      )


def build_moog(model_config: ml_collections.ConfigDict) -> MooG:
  """Builds MooG from `config.model` (see `paper_movi_model_config` for the fields)."""
  validate_model_config(model_config)
  c = model_config
  dtype = COMPUTE_DTYPES[c.get('compute_dtype', 'float32')]
  attention_impl = c.get('attention_impl', 'explicit')
  transformer = lambda sub, **kwargs: modules.Transformer(
      num_layers=sub.num_layers,
      num_heads=sub.num_heads,
      qkv_size=sub.qkv_size,
      mlp_dim=sub.mlp_dim,
      dtype=dtype,
      attention_impl=attention_impl,
      **kwargs,
  )
  return MooG(
      encoder=modules.FrameEncoder(
          channels=tuple(c.encoder_channels),
          strides=tuple(c.encoder_strides),
          num_fourier_bases=c.encoder_fourier_bases,
          pos_embedding=c.encoder_pos_embedding,
          token_dim=c.token_dim,
          dtype=dtype,
      ),
      predictor=transformer(c.predictor),
      corrector=transformer(c.corrector),
      decoder=modules.PixelDecoder(
          num_layers=c.decoder.num_layers,
          num_heads=c.decoder.num_heads,
          qkv_size=c.decoder.qkv_size,
          mlp_dim=c.decoder.mlp_dim,
          num_fourier_bases=c.decoder_fourier_bases,
          self_attention=c.get('decoder_self_attention', False),
          dtype=dtype,
          attention_impl=attention_impl,
      ),
      num_tokens=c.num_tokens,
      token_dim=c.token_dim,
      state_init_scale=c.state_init_scale,
      state_init=c.get('state_init', 'noise'),  # Configs written before the field.
      subsample_factor_train=c.subsample_factor_train,
      subsample_factor_eval=c.subsample_factor_eval,
      remat=c.remat,
      scan_unroll=c.get('scan_unroll', 1),  # Configs written before the field: rolled.
      dtype=dtype,
  )
