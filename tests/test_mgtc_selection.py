"""Tests for mgtc.selection: pixel motion scores and kept-index selection."""
import hypothesis
from hypothesis import strategies as st
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgtc import selection

PATCH = 8
FRAMES, SIZE = 8, 32  # Grid 4 x 4 x 4 = 64 tokens, 16 per slice.
SQUARE = 4


def _square_position(frame: int) -> tuple[int, int]:
  """Top-left corner of the moving square: 3 px down and right per frame."""
  return 1 + 3 * frame, 2 + 3 * frame


def _moving_square_video() -> np.ndarray:
  """[1, 8, 32, 32, 3]: a static textured background and a white 4 x 4 square."""
  background = np.random.default_rng(0).uniform(0.0, 0.5, (SIZE, SIZE, 3))
  video = np.repeat(background[None], FRAMES, axis=0)
  for frame in range(FRAMES):
    row, col = _square_position(frame)
    video[frame, row:row + SQUARE, col:col + SQUARE] = 1.0
  return video[None].astype(np.float32)


def _touched_tokens(frames_of_slice) -> set[int]:
  """Raster indices (slices >= 1) whose patch the square covers in a scored frame."""
  touched = set()
  for t in range(1, FRAMES // 2):
    for frame in frames_of_slice(t):
      row, col = _square_position(frame)
      for r in range(row, row + SQUARE):
        for c in range(col, col + SQUARE):
          touched.add(t * 16 + (r // PATCH) * 4 + c // PATCH)
  return touched


@pytest.mark.parametrize(
    "rule, frames_of_slice",
    [
        ("consecutive", lambda t: (2 * t - 1, 2 * t, 2 * t + 1)),
        ("rlt", lambda t: (2 * t - 2, 2 * t + 1)),
    ],
)
def test_moving_square_keeps_exactly_touched_tokens_and_first_slice(
    rule, frames_of_slice
):
  video = _moving_square_video()
  expected = set(range(16)) | _touched_tokens(frames_of_slice)
  drop_ratio = (64 - len(expected)) / 64  # Exact in binary: k = 64 - |expected|.
  scores = selection.motion_scores(jnp.asarray(video), PATCH, rule=rule)
  kept = selection.select_tokens_by_ratio(scores, drop_ratio, tokens_per_slice=16)
  assert set(np.asarray(kept[0]).tolist()) == expected
  flat = np.asarray(scores).reshape(-1)
  moving = sorted(_touched_tokens(frames_of_slice))
  assert np.all(flat[moving] > 0)
  assert np.all(flat[sorted(set(range(16, 64)) - set(moving))] == 0)


def test_consecutive_score_value_matches_hand_computation():
  video = np.zeros((1, 4, 8, 8, 3), np.float32)
  video[0, 1] = 0.2  # Slice 0: frames 0, 1. Slice 1: frames 2, 3.
  video[0, 2] = 0.5
  video[0, 3] = 0.5
  scores = selection.motion_scores(jnp.asarray(video), patch_size=8)
  # Slice 1 averages |x2 - x1| = 0.3 and |x3 - x2| = 0.
  np.testing.assert_allclose(scores[0, 1, 0, 0], 0.15, rtol=1e-6)
  assert np.isinf(scores[0, 0, 0, 0])
  rlt = selection.motion_scores(jnp.asarray(video), patch_size=8, rule="rlt")
  np.testing.assert_allclose(rlt[0, 1, 0, 0], 0.5, rtol=1e-6)  # |x3 - x0|.


def test_static_video_keeps_first_slice_then_fills_in_raster_order():
  frame = np.random.default_rng(1).uniform(size=(SIZE, SIZE, 3))
  video = jnp.asarray(np.repeat(frame[None, None], FRAMES, axis=1), jnp.float32)
  kept = selection.motion_guided_indices(video, drop_ratio=0.5, patch_size=PATCH)
  np.testing.assert_array_equal(kept[0], np.arange(32))


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((1, 8, 32, 32, 3), dict(drop_ratio=1.0), "drop_ratio=1.0"),
        ((1, 8, 32, 32, 3), dict(drop_ratio=-0.1), "drop_ratio=-0.1"),
        ((1, 8, 32, 32, 3), dict(drop_ratio=0.8), "drop_ratio=0.8"),
        ((1, 5, 32, 32, 3), dict(drop_ratio=0.25), "num_frames=5"),
        ((1, 8, 30, 32, 3), dict(drop_ratio=0.25), "30x32"),
    ],
)
def test_bad_input_raises_value_error_naming_the_value(shape, kwargs, message):
  with pytest.raises(ValueError, match=message):
    selection.motion_guided_indices(jnp.zeros(shape), patch_size=PATCH, **kwargs)


def test_unknown_rule_and_apply_at_raise():
  with pytest.raises(ValueError, match="'flow'"):
    selection.motion_scores(jnp.zeros((1, 4, 8, 8, 3)), 8, rule="flow")
  with pytest.raises(ValueError, match="'always'"):
    selection.is_selection_active("always", train=True)


def test_num_tokens_to_drop_reads_the_ratio_as_written():
  assert selection.num_tokens_to_drop(100, 0.29) == 29  # 0.29 * 100 = 28.99... in fp.
  assert selection.num_tokens_to_drop(1568, 0.25, 196) == 392
  assert selection.num_tokens_to_drop(3136, 0.5, 196) == 1568


@pytest.mark.parametrize(
    "apply_at, train, active",
    [("both", True, True), ("both", False, True), ("train", True, True),
     ("train", False, False), ("test", True, False), ("test", False, True),
     ("none", True, False), ("none", False, False)],
)
def test_apply_at_policy(apply_at, train, active):
  assert selection.is_selection_active(apply_at, train) == active


_SCORES = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(2, 4), st.integers(1, 3),
              st.integers(1, 3)),
    elements=st.integers(0, 3).map(float),  # Few values: many ties.
)


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(scores=_SCORES, ratio_fraction=st.floats(0.0, 1.0))
def test_ratio_selection_properties(scores, ratio_fraction):
  batch, slices, height, width = scores.shape
  scores[:, 0] = np.inf
  num_tokens, per_slice = slices * height * width, height * width
  num_drop = int(ratio_fraction * (num_tokens - per_slice))
  drop_ratio = num_drop / num_tokens
  num_drop = selection.num_tokens_to_drop(num_tokens, drop_ratio, per_slice)
  kept = np.asarray(
      selection.select_tokens_by_ratio(jnp.asarray(scores), drop_ratio, per_slice))
  again = selection.select_tokens_by_ratio(jnp.asarray(scores), drop_ratio, per_slice)
  np.testing.assert_array_equal(kept, again)
  assert kept.shape == (batch, num_tokens - num_drop)
  assert kept.dtype == np.int32
  assert np.all(np.diff(kept, axis=1) > 0)  # Raster order, no duplicates.
  flat = scores.reshape(batch, -1)
  for row in range(batch):
    # Reference: highest score first, ties to the lower index.
    order = np.lexsort((np.arange(num_tokens), -flat[row]))
    np.testing.assert_array_equal(kept[row], np.sort(order[: kept.shape[1]]))
    assert set(range(per_slice)) <= set(kept[row].tolist())


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(
    # No subnormal scores: jitted CPU code flushes them to zero, numpy keeps them, so a
    # 1e-45 score at threshold 0 would be kept by one and dropped by the other.
    scores=hnp.arrays(np.float32, st.tuples(st.integers(1, 2), st.integers(1, 12)),
                      elements=st.floats(0.0, 1.0, width=32, allow_subnormal=False)),
    threshold=st.floats(0.0, 1.0),
    extra_padding=st.integers(0, 3),
)
def test_threshold_selection_pads_to_static_length_with_valid_mask(
    scores, threshold, extra_padding
):
  num_tokens = scores.shape[1]
  counts = np.asarray(selection.threshold_keep_counts(jnp.asarray(scores), threshold))
  length = min(num_tokens, int(counts.max()) + extra_padding)
  kept = selection.select_tokens_by_threshold(jnp.asarray(scores), threshold, length)
  indices, valid = np.asarray(kept.indices), np.asarray(kept.valid)
  assert indices.shape == valid.shape == (scores.shape[0], length)
  for row in range(scores.shape[0]):
    expected = np.flatnonzero(scores[row] > np.float32(threshold))
    np.testing.assert_array_equal(indices[row][valid[row]], expected)
    assert valid[row].sum() == counts[row]
    assert not np.any(valid[row][counts[row]:])  # Padding last.


def test_threshold_mode_always_keeps_first_slice():
  video = jnp.zeros((2, 4, 16, 16, 3))
  scores = selection.motion_scores(video, patch_size=8)
  np.testing.assert_array_equal(
      selection.threshold_keep_counts(scores, threshold=0.1), [4, 4])


@hypothesis.settings(max_examples=8, deadline=None)
@hypothesis.given(data=st.data(), num_tokens=st.sampled_from([1, 7, 20]))
def test_complement_indices_partition_the_tokens(data, num_tokens):
  num_kept = data.draw(st.integers(0, num_tokens))
  kept = np.sort(np.random.default_rng(num_kept).permutation(num_tokens)[:num_kept])
  rest = np.asarray(selection.complement_indices(jnp.asarray(kept[None]), num_tokens))
  assert np.all(np.diff(rest[0]) > 0)
  np.testing.assert_array_equal(
      np.sort(np.concatenate([kept, rest[0]])), np.arange(num_tokens))


def test_add_positions_then_gather_keeps_original_positions():
  tokens = jax.random.normal(jax.random.key(0), (2, 6, 4))
  table = jax.random.normal(jax.random.key(1), (6, 4))
  indices = jnp.array([[0, 2, 5], [1, 3, 4]])
  gathered = selection.add_positions_and_gather(tokens, table, indices)
  for row in range(2):
    np.testing.assert_allclose(
        gathered[row], tokens[row, indices[row]] + table[indices[row]], rtol=1e-6)


def test_selection_jits_with_static_ratio():
  video = jax.random.uniform(jax.random.key(0), (2, FRAMES, SIZE, SIZE, 3))
  select = jax.jit(selection.motion_guided_indices, static_argnums=(1, 2))
  assert select(video, 0.25, PATCH).shape == (2, 48)
