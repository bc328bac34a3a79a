"""Tests for mgtc.vit: the kept-token ViT classifier and the VideoMAE pretrainer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgtc import masking
from mgtc import selection
from mgtc import vit

BATCH = 2
CONFIG = vit.vit_tiny_config()  # 4 x 32^2 clips, 32 tokens, 16 per slice.
CONFIG.depth = 2  # Fewer blocks keep compile times down; behaviour is per block.
CONFIG.decoder_depth = 1
NUM_TOKENS = 32


def _jit_apply(model):
  return jax.jit(model.apply, static_argnames=("train", "method"))


@pytest.fixture(scope="module")
def video():
  return jax.random.uniform(jax.random.key(0), (BATCH, 4, 32, 32, 3))


@pytest.fixture(scope="module")
def initial_params(video):
  model = vit.build_classifier(CONFIG)
  return jax.jit(model.init, static_argnames="train")(
      jax.random.key(1), video, train=False)


@pytest.fixture(scope="module")
def classifier(initial_params):
  # The head init (x 0.001) would hide differences between logits; scale it up.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * 1000 if "head" in jax.tree_util.keystr(path) else x,
      initial_params)
  return _jit_apply(vit.build_classifier(CONFIG)), params


def test_classifier_shapes_and_structure(classifier, video):
  apply, params = classifier
  logits = apply(params, video, train=False)
  assert logits.shape == (BATCH, CONFIG.num_classes) and logits.dtype == jnp.float32
  attention = params["params"]["encoder"]["block_0"]["attn"]
  assert set(attention) == {"qkv", "q_bias", "v_bias", "proj"}
  assert "bias" not in attention["qkv"]  # The k bias is fixed at 0.
  assert len(params["params"]["encoder"]) == CONFIG.depth


def test_head_init_is_scaled_down(initial_params):
  head = initial_params["params"]["head"]["kernel"]
  assert 0 < float(jnp.std(head)) < 1e-4


def test_all_kept_indices_equal_the_full_token_set(classifier, video):
  apply, params = classifier
  full = apply(params, video, train=False)
  every = jnp.broadcast_to(jnp.arange(NUM_TOKENS), (BATCH, NUM_TOKENS))
  kept = apply(params, video, selection.KeptTokens(every), train=False)
  np.testing.assert_allclose(kept, full, rtol=1e-5, atol=1e-5)
  assert float(jnp.std(full)) > 1e-3


def test_encoder_input_equals_embed_all_add_positions_then_gather(classifier, video):
  apply, params = classifier
  indices = jnp.array([[0, 3, 17, 31], [1, 2, 16, 20]])
  direct = apply(params, video, indices, method=vit.VideoViT.encoder_input)
  embedded = apply(params, video, method=vit.VideoViT.embed_patches)
  table = vit.sinusoid_position_table(NUM_TOKENS, CONFIG.width)
  reference = selection.add_positions_and_gather(embedded, table, indices)
  np.testing.assert_allclose(direct, reference, rtol=1e-5, atol=1e-5)


def test_padding_is_invisible_to_attention_and_pooling(classifier, video):
  apply, params = classifier
  real = jnp.array([[1, 5, 9, 20, 30], [0, 2, 4, 6, 8]])
  unpadded = apply(params, video, selection.KeptTokens(real), train=False)
  valid = jnp.array([[True] * 5 + [False] * 3] * BATCH)
  for pad_index in (0, 31):
    padded = jnp.concatenate([real, jnp.full((BATCH, 3), pad_index)], axis=1)
    logits = apply(params, video, selection.KeptTokens(padded, valid), train=False)
    np.testing.assert_allclose(logits, unpadded, rtol=1e-5, atol=1e-5)
  # Tubelet 31 (t = 1, h = w = 3) is only ever a padding slot: change its pixels.
  scrambled = video.at[:, 2:4, 24:32, 24:32].set(9.0)
  padded = jnp.concatenate([real, jnp.full((BATCH, 3), 31)], axis=1)
  logits = apply(params, scrambled, selection.KeptTokens(padded, valid), train=False)
  np.testing.assert_allclose(logits, unpadded, rtol=1e-5, atol=1e-5)
  everything = jnp.ones_like(valid)
  changed = apply(params, scrambled, selection.KeptTokens(padded, everything),
                  train=False)
  assert not np.allclose(changed, unpadded, atol=1e-3)  # Unmasked, it would count.


def test_masked_mean_ignores_padded_values():
  tokens = jnp.arange(24.0).reshape(2, 3, 4)
  valid = jnp.array([[True, True, False], [True, False, False]])
  changed = tokens.at[0, 2].set(1e6).at[1, 1:].set(-1e6)
  np.testing.assert_allclose(vit.masked_mean(tokens, valid),
                             vit.masked_mean(changed, valid))
  np.testing.assert_allclose(vit.masked_mean(tokens, valid)[1], tokens[1, 0])


def test_mgtc_end_to_end_and_drop_path_in_training(initial_params, video):
  config = CONFIG.copy_and_resolve_references()
  config.drop_path_rate = 0.5
  config.fc_drop_rate = 0.5
  model = vit.build_classifier(config)  # Same parameters, stochastic in training.
  kept = masking.kept_token_indices(
      masking.token_drop_config(), video, patch_size=config.patch_size, train=True)
  assert kept.indices.shape == (BATCH, 24)

  def loss(params, rng):
    logits = model.apply(params, video, kept, train=True, rngs={"dropout": rng})
    return jnp.mean(logits**2)

  loss_and_grad = jax.jit(jax.value_and_grad(loss))
  loss_a, grads = loss_and_grad(initial_params, jax.random.key(3))
  loss_b, _ = loss_and_grad(initial_params, jax.random.key(4))
  assert np.isfinite(loss_a) and loss_a != loss_b
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_position_table_is_regenerated_with_a_shared_prefix():
  short = vit.sinusoid_position_table(1568, 768)
  long = vit.sinusoid_position_table(3136, 768)
  np.testing.assert_array_equal(long[:1568], short)
  np.testing.assert_allclose(short[0, :4], [0.0, 1.0, 0.0, 1.0])
  np.testing.assert_allclose(short[1, :2], [np.sin(1.0), np.cos(1.0)], rtol=1e-6)


def test_vit_b_and_s_configs_build_with_expected_sizes():
  video = jax.ShapeDtypeStruct((1, 16, 224, 224, 3), jnp.float32)
  for config, expected_millions in ((vit.vit_b_config(), 86.5),
                                    (vit.vit_s_config(), 22.0)):
    model = vit.build_classifier(config)
    shapes = jax.eval_shape(
        lambda v: model.init(jax.random.key(0), v, train=False), video)
    millions = sum(x.size for x in jax.tree.leaves(shapes)) / 1e6
    assert abs(millions - expected_millions) < 0.5, millions


def test_reconstruction_targets_are_normalised_per_tubelet_and_channel(video):
  targets = vit.reconstruction_targets(video, patch_size=8)
  assert targets.shape == (BATCH, NUM_TOKENS, 2 * 8 * 8 * 3)
  per_channel = targets.reshape(BATCH, NUM_TOKENS, 128, 3)
  np.testing.assert_allclose(per_channel.mean(axis=2), 0.0, atol=1e-5)
  np.testing.assert_allclose(per_channel.std(axis=2, ddof=1), 1.0, rtol=1e-3)


@pytest.fixture(scope="module")
def pretrainer(video):
  model = vit.build_pretrainer(CONFIG)
  grid = selection.token_grid(video.shape, CONFIG.patch_size)
  visible, masked = masking.tube_visible_and_masked(
      jax.random.key(5), BATCH, grid, 0.75)
  params = jax.jit(model.init, static_argnames="train")(
      jax.random.key(6), video, visible, masked, train=False)
  return _jit_apply(model), params, visible, masked


def test_pretrainer_predicts_masked_tubelets_without_seeing_them(pretrainer, video):
  apply, params, visible, masked = pretrainer
  assert visible.shape == (BATCH, 8) and masked.shape == (BATCH, 24)
  predictions = apply(params, video, visible, masked, train=False)
  assert predictions.shape == (BATCH, 24, 384)
  # Overwrite every masked tubelet's pixels: predictions must not move.
  is_masked = np.ones((BATCH, NUM_TOKENS), bool)
  np.put_along_axis(is_masked, np.asarray(visible), False, axis=1)
  pixel_mask = np.repeat(np.repeat(np.repeat(
      is_masked.reshape(BATCH, 2, 4, 4), 2, 1), 8, 2), 8, 3)[..., None]
  scrambled = jnp.where(pixel_mask, 5.0, video)
  np.testing.assert_allclose(
      apply(params, scrambled, visible, masked, train=False), predictions,
      rtol=1e-5, atol=1e-5)


def test_mae_loss_only_counts_masked_tubelets(pretrainer, video):
  apply, params, visible, masked = pretrainer

  def loss(params, video):
    predictions = apply(params, video, visible, masked, train=False)
    targets = vit.reconstruction_targets(video, CONFIG.patch_size)
    return vit.masked_reconstruction_loss(predictions, targets, masked)

  base, grads = jax.jit(jax.value_and_grad(loss))(params, video)
  predictions = apply(params, video, visible, masked, train=False)
  targets = vit.reconstruction_targets(video, CONFIG.patch_size)
  visible_changed = targets.at[jnp.arange(BATCH)[:, None], visible].add(3.0)
  np.testing.assert_allclose(
      vit.masked_reconstruction_loss(predictions, visible_changed, masked), base,
      rtol=1e-6)
  masked_changed = targets.at[jnp.arange(BATCH)[:, None], masked].add(3.0)
  assert vit.masked_reconstruction_loss(predictions, masked_changed, masked) > base
  perfect = selection.gather_tokens(targets, masked)
  assert vit.masked_reconstruction_loss(perfect, targets, masked) == 0.0
  assert float(jnp.abs(grads["params"]["mask_token"]).sum()) > 0
