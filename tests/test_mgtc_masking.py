"""Tests for mgtc.masking: baselines produce their documented patterns."""
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgtc import masking
from mgtc import selection

GRID = selection.TokenGrid(slices=8, height=4, width=6)  # 24 tokens per slice.


def _kept_mask(indices: jax.Array, grid: selection.TokenGrid) -> np.ndarray:
  """int [B, K] kept indices -> bool [B, t, h, w], True = kept."""
  indices = np.asarray(indices)
  mask = np.zeros((indices.shape[0], grid.num_tokens), bool)
  np.put_along_axis(mask, indices, True, axis=1)
  return mask.reshape((-1,) + tuple(grid))


def _assert_raster_ordered(indices: jax.Array):
  assert np.all(np.diff(np.asarray(indices), axis=1) > 0)


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), ratio=st.sampled_from([0.25, 0.5, 0.75]))
def test_random_drop_keeps_the_right_count(seed, ratio):
  kept = masking.random_token_indices(jax.random.key(seed), 3, 64, ratio)
  assert kept.shape == (3, 64 - int(ratio * 64))
  _assert_raster_ordered(kept)


def test_random_drop_draws_per_clip():
  kept = masking.random_token_indices(jax.random.key(0), 4, 64, 0.5)
  assert len({tuple(row.tolist()) for row in np.asarray(kept)}) == 4


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.9])
def test_tube_mask_is_identical_across_slices(ratio):
  kept = masking.tube_mask_indices(jax.random.key(0), 3, GRID, ratio)
  visible = _kept_mask(kept, GRID)
  assert np.all(visible == visible[:, :1])
  per_slice = GRID.tokens_per_slice - int(ratio * GRID.tokens_per_slice)
  assert kept.shape == (3, GRID.slices * per_slice)
  _assert_raster_ordered(kept)
  assert not np.all(visible[0] == visible[1])  # Different clips, different masks.


def _test_running_cell_mask(ratio: float) -> np.ndarray:
  """bool [t, h, w] masked pattern of the deterministic (test-time) running cell."""
  kept = masking.running_cell_indices(1, GRID, ratio)
  assert kept.shape == (1, int(GRID.num_tokens * (1 - ratio)))
  _assert_raster_ordered(kept)
  return ~_kept_mask(kept, GRID)[0]


def test_running_cell_50_visible_two_slices_then_masked_two():
  masked = _test_running_cell_mask(0.5)
  for h in range(GRID.height):
    for w in range(GRID.width):
      sequence = masked[:, h, w].astype(int).tolist()
      rotations = [np.roll([1, 1, 0, 0], shift).tolist() * 2 for shift in range(4)]
      assert sequence in rotations, (h, w, sequence)
  cells = masked.reshape(GRID.slices, 2, 2, 3, 2).sum(axis=(2, 4))
  np.testing.assert_array_equal(cells, 2)


@pytest.mark.parametrize("ratio, masked_per_cell", [(0.25, 1), (0.75, 3)])
def test_running_cell_masks_m_per_cell_and_rotates(ratio, masked_per_cell):
  masked = _test_running_cell_mask(ratio)
  cells = masked.reshape(GRID.slices, 2, 2, 3, 2).sum(axis=(2, 4))
  np.testing.assert_array_equal(cells, masked_per_cell)
  # Every cell shares one pattern that moves one step per slice, period 4.
  np.testing.assert_array_equal(masked[:4], masked[4:])
  assert all(not np.array_equal(masked[t], masked[t + 1]) for t in range(7))


def test_running_cell_test_phase_is_t_mod_4_and_training_phase_varies():
  test_a = masking.running_cell_indices(2, GRID, 0.5)
  np.testing.assert_array_equal(test_a[0], test_a[1])
  train = masking.running_cell_indices(16, GRID, 0.5, rng=jax.random.key(0))
  assert len({tuple(row.tolist()) for row in np.asarray(train)}) > 1
  shuffled = masking.running_cell_indices(
      4, GRID, 0.5, rng=jax.random.key(0), shuffle_slices=True)
  cells = (~_kept_mask(shuffled, GRID)).reshape(4, GRID.slices, 2, 2, 3, 2)
  np.testing.assert_array_equal(cells.sum(axis=(3, 5)), 2)


@pytest.mark.parametrize("ratio", [0.3, 0.0])
def test_running_cell_rejects_unsupported_ratio(ratio):
  with pytest.raises(ValueError, match=f"drop_ratio={ratio}"):
    masking.running_cell_indices(1, GRID, ratio)


def test_running_cell_rejects_odd_grid():
  with pytest.raises(ValueError, match="3x4"):
    masking.running_cell_indices(1, selection.TokenGrid(2, 3, 4), 0.5)


def test_embedding_scores_use_adjacent_slices_and_reuse_first_distance():
  grid = selection.TokenGrid(3, 2, 2)
  embeddings = np.zeros((1, 12, 5), np.float32)
  embeddings[0, 4 + 3, 0] = 3.0  # Slice 1, (h, w) = (1, 1) jumps by 3, then back.
  scores = np.asarray(masking.embedding_motion_scores(jnp.asarray(embeddings), grid))
  np.testing.assert_allclose(scores[0, :, 1, 1], [3.0, 3.0, 3.0])
  np.testing.assert_allclose(scores[0, :, 0, 0], [0.0, 0.0, 0.0])
  kept = masking.embedding_guided_indices(jnp.asarray(embeddings), grid, 0.75)
  np.testing.assert_array_equal(kept[0], [3, 7, 11])


def _video(batch=2):
  return jax.random.uniform(jax.random.key(0), (batch, 8, 16, 24, 3))


@pytest.mark.parametrize(
    "method, ratio", [("mgtc", 0.25), ("random", 0.25), ("tube", 0.25),
                      ("running_cell", 0.25), ("embedding", 0.25)])
def test_dispatcher_gives_equal_token_counts(method, ratio):
  config = masking.token_drop_config()
  config.method, config.drop_ratio = method, ratio
  video = _video()
  num_tokens = 4 * 4 * 6  # 8 frames at 16 x 24 px, tubelet 2 x 4 x 4.
  embeddings = jax.random.normal(jax.random.key(1), (2, num_tokens, 8))
  kept = masking.kept_token_indices(
      config, video, patch_size=4, train=True, rng=jax.random.key(2),
      patch_embeddings=embeddings)
  assert kept.indices.shape == (2, num_tokens * 3 // 4) and kept.valid is None
  _assert_raster_ordered(kept.indices)


def test_dispatcher_random_is_fixed_at_test_and_fresh_in_training():
  config = masking.token_drop_config()
  config.method = "random"
  kwargs = dict(patch_size=4)
  test_a = masking.kept_token_indices(config, _video(), train=False, **kwargs)
  test_b = masking.kept_token_indices(
      config, _video(), train=False, rng=jax.random.key(9), **kwargs)
  np.testing.assert_array_equal(test_a.indices, test_b.indices)
  train_a = masking.kept_token_indices(
      config, _video(), train=True, rng=jax.random.key(1), **kwargs)
  train_b = masking.kept_token_indices(
      config, _video(), train=True, rng=jax.random.key(2), **kwargs)
  assert not np.array_equal(train_a.indices, train_b.indices)


def test_dispatcher_policy_threshold_and_errors():
  config = masking.token_drop_config()
  config.apply_at = "test"
  assert masking.kept_token_indices(config, _video(), patch_size=4, train=True) is None
  config.method = "mgtc_threshold"
  kept = masking.kept_token_indices(
      config, _video(), patch_size=4, train=False, padded_length=40)
  assert kept.indices.shape == kept.valid.shape == (2, 40)
  config.method = "embedding"
  with pytest.raises(ValueError, match="patch_embeddings"):
    masking.kept_token_indices(config, _video(), patch_size=4, train=False)
  config.method, config.apply_at = "tube", "both"
  with pytest.raises(ValueError, match="rng"):
    masking.kept_token_indices(config, _video(), patch_size=4, train=True)
  config.method = "optical_flow"
  with pytest.raises(ValueError, match="'optical_flow'"):
    masking.kept_token_indices(config, _video(), patch_size=4, train=True)
