"""Tests for moog/model.py: parameter counts, recurrence semantics, streaming, loss."""

from collections.abc import Callable
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import moog_official_speed
from configs import moog_wide
from moog import model as moog_model
from moog import modules
from videolib import train

HEIGHT = WIDTH = 16
NUM_FRAMES = 4


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def random_variables(module, rng, *args, **kwargs):
  """Random variables shaped like `module.init`'s (same recipe as test_moog_modules.py).

  Compiling the Flax initialisers costs seconds of CPU; tests that check computation
  (not initialisation) use numpy draws on the `eval_shape` tree instead.
  """
  shapes = jax.eval_shape(functools.partial(module.init, **kwargs), rng, *args)
  np_rng = np.random.default_rng(0)

  def sample(path, leaf):
    noise = np_rng.standard_normal(leaf.shape).astype(np.float32)
    name = path[-1].key
    if name == 'kernel':
      return jnp.asarray(noise / np.sqrt(np.prod(leaf.shape[:-1])))
    return jnp.asarray(1.0 + 0.1 * noise if name == 'scale' else 0.1 * noise)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def _param_shapes(config, video_shape=(1, 2, 32, 32, 3)):
  """Parameter shapes via eval_shape: no compute, so the paper model is cheap."""
  model = moog_model.build_moog(config)
  rngs = {'params': jax.random.key(0), 'default': jax.random.key(1)}
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, rngs, jnp.zeros(video_shape))['params']


def moving_square_videos(batch_size, num_frames=NUM_FRAMES, size=HEIGHT, seed=0):
  """Coloured 4x4 squares moving at constant velocity on a grey background."""
  rng = np.random.default_rng(seed)
  video = np.full((batch_size, num_frames, size, size, 3), 0.5, np.float32)
  for b in range(batch_size):
    y, x = rng.integers(0, size - 4, 2)
    vy, vx = rng.choice([-1, 1], 2)
    colour = rng.uniform(0, 1, 3)
    for t in range(num_frames):
      top, left = (y + vy * t) % (size - 4), (x + vx * t) % (size - 4)
      video[b, t, top : top + 4, left : left + 4] = colour
  return jnp.asarray(video)


class Tiny(NamedTuple):
  model: moog_model.MooG
  variables: dict
  video: jax.Array
  initial_state: jax.Array
  run: Callable[..., dict]
  loss_and_grad: Callable[..., tuple]


@pytest.fixture(scope='module')
def tiny() -> Tiny:
  """The tiny model, its variables and jitted functions shared by the tests.

  XLA compiles dominate the runtime on CPU, so tests share a few jitted functions and
  call them with the same signature (positional variables, video, state, rng; a
  keyword instead of a positional argument would recompile). `run` always takes an
  explicit initial state; `loss_and_grad` exercises the random-init path.
  """
  model = moog_model.build_moog(moog_model.tiny_model_config())
  video = moving_square_videos(2)
  rngs = {'params': jax.random.key(0), 'default': jax.random.key(1)}
  variables = random_variables(model, rngs, video, train=True)
  initial_state = model.apply(
      variables, (2,), method=moog_model.MooG.initial_state, rngs={'default': jax.random.key(2)}
  )

  @functools.partial(jax.jit, static_argnames=('train',))
  def run(variables, video, state, rng, train, mask=None):
    return model.apply(
        variables, video, train=train, state=state, encoder_token_mask=mask,
        rngs={'default': rng},
    )

  @jax.jit
  def loss_and_grad(params, video, rng):
    def loss_fn(p):
      outputs = model.apply({'params': p}, video, train=True, rngs={'default': rng})
      return moog_model.l2_loss(outputs), outputs['video_predicted']
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  return Tiny(model, variables, video, initial_state, run, loss_and_grad)


# ---------------------------------------------------------------------------------------
# Parameter counts.
# ---------------------------------------------------------------------------------------


def test_paper_movi_parameter_counts():
  params = _param_shapes(moog_model.paper_movi_model_config())
  assert set(params) == {'encoder', 'predictor', 'corrector', 'decoder', 'state_norm'}
  assert _count(params['encoder']['backbone']) == 2_289_152  # convs + output norm
  assert _count(params['encoder']['pos_embedding']) == 41_472  # Dense(80 -> 512)
  assert _count(params['encoder']['token_projection']) == 263_168  # Dense(512) + norm
  assert _count(params['encoder']) == 2_593_792
  assert _count(params['corrector']) == 8_398_848
  assert _count(params['predictor']) == 7_877_504
  assert _count(params['decoder']) == 15_856_131
  assert _count(params['state_norm']) == 512
  assert _count(params) == 34_726_787


@pytest.mark.parametrize('preset, count', [('tiny', 1_935_747), ('paper', 34_726_787)])
def test_official_speed_configs_have_the_official_parameter_counts(preset, count):
  config = moog_official_speed.get_config(preset)
  assert (config.model.remat, config.model.scan_unroll, config.model.state_init) == (
      False, 0, 'noise')  # As the official code runs them.
  assert _count(_param_shapes(config.model)) == count


def test_official_speed_config_needs_a_preset():
  with pytest.raises(ValueError, match="needs one of"):
    moog_official_speed.get_config(None)


def test_ego4d_variant_parameter_count():
  params = _param_shapes(moog_model.ego4d_model_config())
  # Concat PE: tokens are 592 wide; the 0-layer transformer maps 592 -> 512 -> 592 and
  # the corrector's cross-attention keys/values read 592-d tokens.
  assert _count(params['encoder']) == 2_896_976
  assert _count(params['corrector']) == 8_562_688
  assert _count(params) == 35_193_811


@pytest.mark.parametrize('arg, backbone, num_tokens', [
    ('', 'moog', 64), ('grid', 'grid', 64), ('fine', 'moog', 256),
    ('grid_rec,fine', 'grid_rec', 256)])
def test_wide_config_parameter_counts_and_options(arg, backbone, num_tokens):
  config = moog_wide.get_config(arg)
  params = _param_shapes(config.model)
  # Grid and Grid Rec. share MooG's tree, and no part depends on the token count.
  assert {part: _count(tree) for part, tree in params.items()} == {
      'encoder': 445_568, 'corrector': 2_102_528, 'predictor': 1_577_472,
      'decoder': 3_483_779, 'state_norm': 256}
  assert _count(params) == 7_609_603
  assert config.get('backbone', 'moog') == backbone
  assert config.model.num_tokens == num_tokens


@pytest.mark.parametrize('arg', ['grid,grid_rec', 'wide'])
def test_wide_config_refuses_unknown_arguments(arg):
  with pytest.raises(ValueError, match='known: at most one of'):
    moog_wide.get_config(arg)


# ---------------------------------------------------------------------------------------
# Shapes and validation.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('batch_shape', [(), (2,), (2, 3)])
@pytest.mark.parametrize('train, lattice', [(True, 4), (False, 8)])
def test_output_shapes(tiny, batch_shape, train, lattice):
  video = jnp.zeros(batch_shape + (NUM_FRAMES, HEIGHT, WIDTH, 3))
  apply = functools.partial(tiny.model.apply, train=train, rngs={'default': jax.random.key(0)})
  shapes = jax.tree.map(lambda x: x.shape, jax.eval_shape(apply, tiny.variables, video))
  n, d = 8, 32
  assert shapes == {
      'video_predicted': batch_shape + (NUM_FRAMES, lattice, lattice, 3),
      'subsampled_targets': batch_shape + (NUM_FRAMES, lattice, lattice, 3),
      'states_predicted': batch_shape + (NUM_FRAMES, n, d),
      'states_corrected': batch_shape + (NUM_FRAMES, n, d),
      'states_concat': batch_shape + (NUM_FRAMES, 2 * n, d),
      'state': batch_shape + (n, d),
  }


@pytest.mark.parametrize(
    'field, value, message',
    [
        ('token_dim', 33, r'model.predictor.num_heads=2 does not divide'),
        ('decoder.num_heads', 5, r'model.decoder.num_heads=5 does not divide.*decoder_fourier'),
        ('corrector.qkv_size', 33, r'model.corrector.qkv_size=33 is not divisible'),
        ('encoder_pos_embedding', 'add', r'model.encoder_pos_embedding'),
        ('encoder_strides', (2,), r'model.encoder_channels'),
        ('scan_unroll', -1, r'model.scan_unroll must be >= 0'),
    ],
)
def test_invalid_config_raises(field, value, message):
  config = moog_model.tiny_model_config()
  if '.' in field:
    part, name = field.split('.')
    config[part][name] = value
  else:
    config[field] = value
  with pytest.raises(ValueError, match=message):
    moog_model.build_moog(config)


@pytest.mark.parametrize(
    'video_shape, message',
    [
        ((1, 1, 16, 16, 3), 'at least 2'),
        ((1, 2, 18, 16, 3), r'encoder stride 4 \(model.encoder_strides'),
        ((1, 2, 12, 12, 3), r'model.subsample_factor_eval=8'),
    ],
)
def test_invalid_video_raises(video_shape, message):
  config = moog_model.tiny_model_config()
  config.subsample_factor_eval = 8
  model = moog_model.build_moog(config)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(
        functools.partial(model.init, train=False),
        {'params': jax.random.key(0), 'default': jax.random.key(1)},
        jnp.zeros(video_shape),
    )


# ---------------------------------------------------------------------------------------
# Recurrence semantics.
# ---------------------------------------------------------------------------------------


def test_initial_state_is_normed_small_noise(tiny):
  init_state = functools.partial(
      tiny.model.apply, tiny.variables, method=moog_model.MooG.initial_state
  )
  states = init_state((2,), rngs={'default': jax.random.key(0)})
  assert states.shape == (2, 8, 32)
  # Noise variance 1e-8 is far below the norm's eps 1e-4: tokens come out ~0.01 N(0, 1).
  np.testing.assert_allclose(np.std(states), 0.01, rtol=0.15)
  assert not np.allclose(states[0], states[1])  # per sample
  other = init_state((2,), rngs={'default': jax.random.key(1)})
  assert not np.allclose(states, other)  # per forward pass (rng)


def test_learned_initial_state_gives_each_token_its_own_start():
  config = moog_model.tiny_model_config()
  noise_params = _param_shapes(config)
  config.state_init = 'learned'
  model = moog_model.build_moog(config)
  params = _param_shapes(config)
  # Exactly one extra parameter, the [n, d] initial tokens; the rest is unchanged.
  assert params['initial_tokens'].shape == (8, 32)
  assert _count(params) == _count(noise_params) + 8 * 32
  assert jax.tree.structure({k: v for k, v in params.items() if k != 'initial_tokens'}) == (
      jax.tree.structure(noise_params))
  tokens = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
  variables = {'params': {'initial_tokens': jnp.asarray(tokens),
                          'state_norm': {'scale': jnp.ones(32)}}}
  states = model.apply(variables, (3,), method=moog_model.MooG.initial_state,
                       rngs={'default': jax.random.key(0)})
  # LN(tokens + 1e-4 noise): per token its own normed vector, the same for every sample.
  normed = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(
      tokens.var(-1, keepdims=True) + moog_model.STATE_NORM_EPSILON)
  for sample in states:
    np.testing.assert_allclose(sample, normed, atol=1e-3)
  with pytest.raises(ValueError, match="state_init must be 'noise' or 'learned'"):
    config.state_init = 'zeros'
    _param_shapes(config)


def test_prediction_uses_only_past_frames(tiny):
  def run(video):
    return tiny.run(tiny.variables, video, tiny.initial_state, jax.random.key(3), train=False)

  video = tiny.video
  outputs = run(video)
  # Frame 0 is predicted from the initial state alone.
  unrelated = run(1.0 - video)
  np.testing.assert_array_equal(outputs['video_predicted'][:, 0],
                                unrelated['video_predicted'][:, 0])
  # Frames >= 2 do not influence predictions of frames <= 2.
  perturbed = run(video.at[:, 2:].set(0.0))
  np.testing.assert_array_equal(
      outputs['video_predicted'][:, :3], perturbed['video_predicted'][:, :3]
  )
  assert not np.allclose(outputs['video_predicted'][:, 3], perturbed['video_predicted'][:, 3])
  # ... whereas the corrected state of frame 2 does see frame 2.
  assert not np.allclose(outputs['states_corrected'][:, 2], perturbed['states_corrected'][:, 2])
  np.testing.assert_array_equal(
      outputs['states_concat'],
      np.concatenate([outputs['states_predicted'], outputs['states_corrected']], axis=-2),
  )
  np.testing.assert_array_equal(outputs['state'], outputs['states_corrected'][:, -1])


def test_random_initial_state_prediction_ignores_the_video(tiny):
  params, rng = tiny.variables['params'], jax.random.key(4)
  (_, predicted), _ = tiny.loss_and_grad(params, tiny.video, rng)
  # Same rng, unrelated video: identical frame-0 predictions (same state and lattice).
  (_, unrelated), _ = tiny.loss_and_grad(params, 1.0 - tiny.video, rng)
  np.testing.assert_array_equal(unrelated[:, 0], predicted[:, 0])
  assert not np.allclose(unrelated[:, 1], predicted[:, 1])


def test_eval_prediction_is_the_full_frame_decode_on_the_lattice(tiny):
  outputs = tiny.run(tiny.variables, tiny.video, tiny.initial_state, jax.random.key(3),
                     train=False)
  decode_frame = functools.partial(
      tiny.model.apply, height=HEIGHT, width=WIDTH, method=moog_model.MooG.decode_frame
  )
  full = jax.jit(decode_frame)(tiny.variables, outputs['states_predicted'])
  assert full.shape == (2, NUM_FRAMES, HEIGHT, WIDTH, 3)
  # Eval factor 2, offset 0: kept pixels 2 * i + 1.
  np.testing.assert_allclose(outputs['video_predicted'], full[:, :, 1::2, 1::2], atol=1e-5)
  np.testing.assert_array_equal(outputs['subsampled_targets'], tiny.video[:, :, 1::2, 1::2])


def test_train_lattice_has_random_phase_and_stays_aligned(tiny):
  factor = 4
  # Pixels encode their own (row, column), so the targets reveal the kept lattice.
  rows, cols = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing='ij')
  frame = np.stack([rows / (HEIGHT - 1), cols / (WIDTH - 1), np.zeros_like(rows)], -1)
  video = jnp.asarray(np.broadcast_to(frame, (2, NUM_FRAMES) + frame.shape), jnp.float32)
  outputs = tiny.run(tiny.variables, video, tiny.initial_state, jax.random.key(5), train=True)
  kept_rows = np.rint(outputs['subsampled_targets'][..., 0] * (HEIGHT - 1)).astype(int)
  kept_cols = np.rint(outputs['subsampled_targets'][..., 1] * (WIDTH - 1)).astype(int)
  # A regular stride-4 lattice per (sample, frame), wrapping at the border ...
  np.testing.assert_array_equal(np.diff(kept_rows, axis=-2) % HEIGHT, factor)
  np.testing.assert_array_equal(np.diff(kept_cols, axis=-1) % WIDTH, factor)
  np.testing.assert_array_equal(np.diff(kept_rows, axis=-1), 0)
  np.testing.assert_array_equal(np.diff(kept_cols, axis=-2), 0)
  # ... whose phase (2 - o) mod 4 is redrawn per sample and per frame (8 draws of 16).
  phases = np.stack([kept_rows[..., 0, 0], kept_cols[..., 0, 0]], -1) % factor
  assert len({tuple(p) for p in phases.reshape(-1, 2)}) > 2
  # The prediction at each kept pixel is the decode of the predicted state there.
  coords = np.stack([kept_rows, kept_cols], -1) / (HEIGHT - 1) * 2.0 - 1.0
  decode = jax.jit(functools.partial(tiny.model.apply, method=moog_model.MooG.decode))
  decoded = decode(tiny.variables, outputs['states_predicted'], jnp.asarray(coords, jnp.float32))
  np.testing.assert_allclose(outputs['video_predicted'], decoded, atol=1e-5)


def test_streaming_in_chunks_equals_one_pass(tiny):
  def run(video, state):
    return tiny.run(tiny.variables, video, state, jax.random.key(7), train=False)

  whole = run(tiny.video, tiny.initial_state)
  first = run(tiny.video[:, :2], tiny.initial_state)
  second = run(tiny.video[:, 2:], first['state'])
  for name in ('video_predicted', 'subsampled_targets', 'states_predicted', 'states_corrected'):
    chunked = np.concatenate([first[name], second[name]], axis=1)
    np.testing.assert_allclose(chunked, whole[name], atol=1e-5, err_msg=name)
  np.testing.assert_allclose(second['state'], whole['state'], atol=1e-5)


def test_capture_intermediates_records_every_module_without_changing_outputs(tiny):
  # Regression: the time scan used to split intermediates sown before it (the encoder's,
  # the initial state's norm) along a time axis they do not have.
  def apply(**kwargs):
    return tiny.model.apply(tiny.variables, tiny.video, train=False, rngs={'default': jax.random.key(7)},
                            **kwargs)

  plain = apply()
  captured, state = apply(capture_intermediates=True, mutable=['intermediates'])
  for name, value in plain.items():
    np.testing.assert_array_equal(captured[name], value, err_msg=name)
  sown = state['intermediates']
  batch, frames = tiny.video.shape[:2]
  num_tokens, token_dim = plain['state'].shape[1:]
  (encoded,) = sown['encoder']['__call__']
  assert encoded.shape[:2] == (batch, frames)
  (predictor_outputs,) = sown['predictor']['__call__']  # Stacked over time, first.
  assert predictor_outputs.shape == (frames, batch, num_tokens, token_dim)
  initial, corrected = sown['state_norm']['__call__']  # Before the scan, then per step.
  assert initial.shape == (batch, num_tokens, token_dim)
  np.testing.assert_array_equal(jnp.moveaxis(corrected, 0, 1), plain['states_corrected'])


def test_encoder_token_mask(tiny):
  num_enc_tokens = (HEIGHT // 4) * (WIDTH // 4)
  run = functools.partial(tiny.run, tiny.variables, tiny.video, tiny.initial_state,
                          jax.random.key(11), train=True)
  plain = run()
  all_true = run(mask=jnp.ones((2, NUM_FRAMES, num_enc_tokens), bool))
  jax.tree.map(np.testing.assert_array_equal, plain, all_true)

  mask = jnp.ones((2, NUM_FRAMES, num_enc_tokens), bool).at[:, 1, :5].set(False)
  masked = run(mask=mask)
  np.testing.assert_array_equal(masked['states_corrected'][:, 0], plain['states_corrected'][:, 0])
  assert not np.allclose(masked['states_corrected'][:, 1], plain['states_corrected'][:, 1])

  # Masking tokens in the correction is the same as removing them.
  encode = jax.jit(functools.partial(tiny.model.apply, method=moog_model.MooG.encode))
  tokens = encode(tiny.variables, tiny.video[:, 1])
  keep = np.arange(num_enc_tokens) >= 5
  correct = functools.partial(
      jax.jit(functools.partial(tiny.model.apply, method=moog_model.MooG.correct)),
      tiny.variables,
  )
  predicted = plain['states_predicted'][:, 1]
  np.testing.assert_allclose(
      correct(predicted, tokens, jnp.broadcast_to(keep, (2, num_enc_tokens))),
      correct(predicted, tokens[:, keep]),
      atol=1e-5,
  )


def _assert_same_loss_and_gradients_as_tiny(tiny, **model_overrides):
  """A model built from `tiny_model_config()` with overrides matches `tiny` exactly."""
  config = moog_model.tiny_model_config()
  config.update(model_overrides)
  other_model = moog_model.build_moog(config)

  @jax.jit
  def other_loss_and_grad(params, rng):
    def loss_fn(p):
      outputs = other_model.apply({'params': p}, tiny.video, train=True, rngs={'default': rng})
      return moog_model.l2_loss(outputs), outputs['video_predicted']
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  params, rng = tiny.variables['params'], jax.random.key(13)
  (loss, preds), grads = tiny.loss_and_grad(params, tiny.video, rng)
  (other_loss, other_preds), other_grads = other_loss_and_grad(params, rng)
  np.testing.assert_allclose(other_loss, loss, rtol=1e-6)
  np.testing.assert_allclose(other_preds, preds, atol=1e-6)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-7),
               other_grads, grads)
  assert _count(grads) == _count(tiny.variables)


def test_remat_gives_identical_outputs_and_gradients(tiny):
  _assert_same_loss_and_gradients_as_tiny(tiny, remat=True)


@pytest.mark.parametrize('scan_unroll', [0, 3])
def test_unrolled_time_loop_gives_identical_outputs_and_gradients(tiny, scan_unroll):
  # 0 unrolls the whole clip; 3 does not divide the 4 frames, so a remainder is left.
  _assert_same_loss_and_gradients_as_tiny(tiny, scan_unroll=scan_unroll)


def test_dot_product_attention_gives_identical_outputs_and_gradients(tiny):
  _assert_same_loss_and_gradients_as_tiny(tiny, attention_impl='dot_product_attention')


def test_hand_written_attention_backward_gives_autodiffs_gradients(tiny, monkeypatch):
  # The model as it was before `explicit_attention`: JAX differentiates the einsums.
  monkeypatch.setattr(modules, 'explicit_attention', modules._softmax_attention)  # pylint: disable=protected-access
  _assert_same_loss_and_gradients_as_tiny(tiny)


def test_trainer_compiler_options_keep_outputs_and_gradients(tiny):
  options = train.compiler_options()
  assert options == {'xla_cpu_experimental_ynn_fusion_type': ''}  # The tests run on CPU.
  args = (tiny.variables['params'], tiny.video, jax.random.key(13))
  lowered = tiny.loss_and_grad.lower(*args)
  (loss, preds), grads = lowered.compile()(*args)
  (other_loss, other_preds), other_grads = lowered.compile(options)(*args)
  np.testing.assert_allclose(other_loss, loss, rtol=1e-6)
  np.testing.assert_allclose(other_preds, preds, atol=1e-6)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-7),
               other_grads, grads)


# ---------------------------------------------------------------------------------------
# Loss, metric, training.
# ---------------------------------------------------------------------------------------


def test_l2_loss_and_psnr_values():
  targets = jnp.zeros((2, 3, 2, 2, 3))
  predictions = targets.at[0].set(0.1).at[1].set(0.01)
  outputs = {'video_predicted': predictions, 'subsampled_targets': targets}
  np.testing.assert_allclose(moog_model.l2_loss(outputs), (0.01 + 0.0001) / 2, rtol=1e-6)
  # Per-image PSNRs 20 dB and 40 dB, averaged (not the PSNR of the mean MSE).
  np.testing.assert_allclose(moog_model.psnr(predictions, targets), 30.0, rtol=1e-5)


def test_tiny_model_learns_moving_squares(tiny):
  optimizer = optax.adam(3e-3)
  update = jax.jit(optimizer.update)

  def eval_loss(params):
    outputs = tiny.run({'params': params}, tiny.video, tiny.initial_state, jax.random.key(0),
                       train=False)
    return float(moog_model.l2_loss(outputs))

  params = tiny.variables['params']
  opt_state = optimizer.init(params)
  initial = eval_loss(params)
  for rng in jax.random.split(jax.random.key(17), 60):
    _, grads = tiny.loss_and_grad(params, tiny.video, rng)
    updates, opt_state = update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  final = eval_loss(params)
  assert final < 0.3 * initial, (initial, final)
