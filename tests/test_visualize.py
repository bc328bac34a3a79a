"""Token tracking maths on hand-made attention, and the token-track GIF of a trained run."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
import tiny_configs

from configs import moog_tiny
from moog import model as moog_model
from moog import task as moog_task
from moog import token_tracking
from moog import visualize
from videolib import train



def _one_hot_maps(cells: list[list[tuple[int, int]]], grid: tuple[int, int]) -> np.ndarray:
  """`[T, n, h, w]` maps with all of token i's mass on cell `cells[t][i]` at frame t."""
  maps = np.zeros((len(cells), len(cells[0])) + grid, np.float32)
  for t, frame_cells in enumerate(cells):
    for token, (row, col) in enumerate(frame_cells):
      maps[t, token, row, col] = 1.0
  return maps


def test_attention_maps_average_heads_and_unflatten_row_major():
  weights = np.zeros((1, 2, 2, 1, 6), np.float32)  # [b, T, heads, n, h * w], grid 2x3.
  weights[0, :, 0, 0, 5] = 1.0  # Head 0: cell (1, 2).
  weights[0, :, 1, 0, 1] = 1.0  # Head 1: cell (0, 1).
  maps = token_tracking.attention_maps(jnp.asarray(weights), (2, 3))
  assert maps.shape == (1, 2, 1, 2, 3)
  np.testing.assert_allclose(maps[0, 0, 0], [[0, 0.5, 0], [0, 0, 0.5]])


def test_centroid_of_a_one_hot_map_is_that_cells_centre_in_pixels():
  maps = _one_hot_maps([[(0, 0), (2, 1), (3, 3)]], (4, 4))
  centroids = token_tracking.attention_centroids(jnp.asarray(maps), (16, 16))
  # Stride 4: cell (i, j) covers pixels [4i, 4i + 4) x [4j, 4j + 4), centred at 4i + 2.
  np.testing.assert_allclose(centroids[0], [[2, 2], [10, 6], [14, 14]])


def test_centroid_of_a_split_map_is_the_weighted_mean():
  maps = np.zeros((1, 2, 4), np.float32)
  maps[0, 0, 0], maps[0, 1, 3] = 0.75, 0.25
  centroids = token_tracking.attention_centroids(jnp.asarray(maps), (8, 16))
  np.testing.assert_allclose(centroids[0], [0.75 * 2 + 0.25 * 6, 0.75 * 2 + 0.25 * 14])


def test_attention_point_tracks_move_queries_with_the_tokens_attending_to_them():
  # A 1x4 grid of 2x2-pixel cells over a 2x8 frame: cell centres x = 1, 3, 5, 7, y = 1.
  maps = np.zeros((1, 3, 2, 1, 4), np.float32)  # [b, T, n, h, w]
  maps[0, :, 0, 0, [3, 1, 2]] = np.eye(3)  # Token 0: cell 3, then 1, then 2 (x 7 -> 3 -> 5).
  maps[0, 0, 1, 0, 0] = 1.0  # Token 1: cell 0, then half on cells 0 and 1 (x = 2), unmoved.
  maps[0, 1:, 1, 0, :2] = 0.5
  maps = jnp.asarray(maps)
  query_yx = jnp.asarray([[[1.0, 3.2], [1.0, 6.0]]])  # Cells 1 and 3.
  tracks = token_tracking.attention_point_tracks(maps, (2, 8), query_yx)
  # Query 0 on frame 1 (the reference): token 0 attends 1.0 to its cell, token 1 0.5, so
  # weights 2/3 and 1/3; token 0 then moves +2 px in x, token 1 not at all.
  np.testing.assert_allclose(tracks[0, 0], [[3.2, 1], [3.2, 1], [3.2 + 4 / 3, 1]], rtol=1e-6)
  # No token attends to query 1's cell on frame 1: it stays put (no 0 / 0).
  np.testing.assert_allclose(tracks[0, 1], [[6, 1]] * 3)
  sharp = token_tracking.attention_point_tracks(maps, (2, 8), query_yx[:, :1], power=30.0)
  np.testing.assert_allclose(sharp[0, 0, 2], [3.2 + 2, 1], rtol=1e-5)
  from_frame_0 = token_tracking.attention_point_tracks(
      maps, (2, 8), query_yx[:, 1:], reference_frame=0)
  # Query 1 sits on token 0's frame-0 cell and follows it: x 6 -> 6 - 4 -> 6 - 2.
  np.testing.assert_allclose(from_frame_0[0, 0], [[6, 1], [2, 1], [4, 1]], rtol=1e-6)


def test_point_tracks_follow_decoder_maps_whose_tokens_render_a_moving_object():
  # Two tokens share a 1x8 frame (pixel maps): token 0 renders a 2-pixel object that
  # moves right 1 px per frame, token 1 the rest. Per pixel the shares sum to 1 over
  # tokens, as a decoder's do; token maps are not normalised, so the tracker must.
  num_frames, width = 4, 8
  maps = np.zeros((1, num_frames, 2, 1, width), np.float32)
  for t in range(num_frames):
    maps[0, t, 0, 0, 2 + t:4 + t] = 1.0
  maps[0, :, 1] = 1.0 - maps[0, :, 0]
  np.testing.assert_allclose(maps.sum(axis=2), 1.0)
  query_yx = jnp.asarray([[[0.5, 3.5]]])  # On the object at frame 1 (pixels 3 and 4).
  tracks = token_tracking.attention_point_tracks(jnp.asarray(maps), (1, width), query_yx)
  np.testing.assert_allclose(tracks[0, 0, :, 0], [3.5, 3.5, 4.5, 5.5], rtol=1e-6)


def test_consistency_is_one_when_following_the_object_and_lower_when_staying_put():
  # A 2x2-pixel object (id 1) moves one grid cell right per frame on a 4x4 grid of 2x2
  # cells, over background 0. Token 0 follows it; token 1 stays on its first cell.
  num_frames, grid = 4, (4, 4)
  segmentations = np.zeros((num_frames, 8, 8), np.int32)
  for t in range(num_frames):
    segmentations[t, 2:4, 2 * t:2 * t + 2] = 1
  cells = [[(1, t), (1, 0)] for t in range(num_frames)]
  maps = jnp.asarray(_one_hot_maps(cells, grid))
  mass = token_tracking.segment_attention_mass(maps, jnp.asarray(segmentations), 2)
  np.testing.assert_allclose(mass[:, 0], np.tile([[0.0, 1.0]], (num_frames, 1)))
  result = token_tracking.token_consistency(maps, jnp.asarray(segmentations), 2)
  np.testing.assert_allclose(result["per_token"], [1.0, 0.0])
  np.testing.assert_array_equal(result["bound"], [True, True])  # Lift 16 on the object.
  assert float(result["consistency"]) == pytest.approx(0.5)
  assert float(result["bound_fraction"]) == 1.0


def test_consistency_counts_the_frames_before_the_object_left():
  segmentations = np.zeros((5, 4, 4), np.int32)
  segmentations[:, 0, 0] = 3
  segmentations[3:, 0, 0] = 0  # The object leaves the token's cell at frame 3.
  maps = jnp.asarray(_one_hot_maps([[(0, 0)]] * 5, (4, 4)))
  result = token_tracking.token_consistency(maps, jnp.asarray(segmentations), 4)
  np.testing.assert_allclose(result["per_token"], [2 / 4])


def test_uniform_attention_binds_no_token_so_consistency_is_undefined():
  segmentations = jnp.zeros((2, 3, 4, 4), jnp.int32).at[..., :2, :2].set(1)
  maps = jnp.full((2, 3, 5, 2, 2), 0.25)
  consistency = jax.jit(token_tracking.token_consistency, static_argnums=2)
  result = consistency(maps, segmentations, 2)
  assert result["per_token"].shape == (2, 5)
  assert not result["bound"].any() and float(result["bound_fraction"]) == 0.0
  assert np.isnan(result["consistency"])


def test_only_bound_tokens_enter_the_consistency():
  # Token 0 attends to the object (a quarter of the frame) with lift 4, then loses it;
  # token 1 attends uniformly (lift 1): unbound, so its score does not count.
  segmentations = np.zeros((3, 4, 4), np.int32)
  segmentations[:, :2, :2] = 1
  maps = np.full((3, 2, 2, 2), 0.25, np.float32)
  maps[:, 0] = 0.0
  maps[0, 0, 0, 0] = 1.0
  maps[1:, 0, 1, 1] = 1.0
  result = token_tracking.token_consistency(jnp.asarray(maps), jnp.asarray(segmentations), 2)
  np.testing.assert_array_equal(result["bound"], [True, False])
  np.testing.assert_allclose(result["per_token"][0], 0.0)
  assert float(result["consistency"]) == 0.0 and float(result["bound_fraction"]) == 0.5


def test_corrector_cross_attention_comes_batch_major_from_a_real_moog_apply():
  model = moog_model.build_moog(moog_model.tiny_model_config())
  video = jnp.zeros((2, 3, 16, 16, 3))
  rngs = {"params": jax.random.key(0), "default": jax.random.key(1)}
  variables = model.init(rngs, video, train=False)
  _, state = model.apply(variables, video, train=False, rngs={"default": jax.random.key(2)},
                         mutable=["intermediates"])
  weights = token_tracking.corrector_cross_attention(state["intermediates"])
  # [b, T, heads, n tokens, 4x4 encoder grid (16x16 frames, stride 4)].
  assert weights.shape == (2, 3, 2, 8, 16)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  maps = token_tracking.attention_maps(weights, (4, 4))
  assert maps.shape == (2, 3, 8, 4, 4)


def test_decoder_responsibility_maps_are_token_major_and_sum_to_one_per_pixel():
  model = moog_model.build_moog(moog_model.tiny_model_config())
  video = jax.random.uniform(jax.random.key(3), (2, 3, 16, 16, 3))
  rngs = {"params": jax.random.key(0), "default": jax.random.key(1)}
  variables = model.init(rngs, video, train=False)
  outputs = model.apply(variables, video, train=False, rngs={"default": jax.random.key(2)})
  _, decoding = model.apply(variables, outputs["states_predicted"], 8, 12,
                            method=model.decode_frame, mutable=["intermediates"])
  maps = token_tracking.decoder_responsibility_maps(decoding["intermediates"], (8, 12))
  assert maps.shape == (2, 3, 8, 8, 12)  # [b, T, n tokens, H, W].
  np.testing.assert_allclose(maps.sum(axis=2), 1.0, rtol=1e-5)
  (weights,) = decoding["intermediates"]["decoder"]["transformer"]["block_0"][
      "cross_attention"]["attention_weights"]  # [b, T, heads, H * W, n].
  pixel = 5 * 12 + 7  # Row 5, column 7, row-major.
  np.testing.assert_allclose(maps[1, 2, :, 5, 7], weights[1, 2, :, pixel].mean(axis=0),
                             rtol=1e-6)


def test_draw_tracks_puts_each_tokens_dot_at_its_centroid():
  frame = np.zeros((8, 8, 3), np.uint8)
  tracks = np.array([[[2.0, 2.0], [6.0, 5.0]], [[2.0, 3.0], [6.0, 6.0]]])  # [t, k, (y, x)].
  colours = [(255, 0, 0), (0, 255, 0)]
  image = token_tracking.draw_tracks(frame, tracks, scale=4, colours=colours)
  assert image.shape == (32, 32, 3)
  np.testing.assert_array_equal(image[8, 12], colours[0])  # Token 0 now at (2, 3) * 4.
  np.testing.assert_array_equal(image[24, 24], colours[1])  # Token 1 now at (6, 6) * 4.
  np.testing.assert_array_equal(image[8, 8], colours[0])  # Its trail starts at (2, 2) * 4.


def test_render_summaries_draws_token_tracks_over_the_real_frames():
  task = moog_task.MooGTask(moog_tiny.get_config())
  strip = np.zeros((2, 3, 16, 8, 3), np.uint8)  # [b, T, real above predicted, W, 3].
  strip[:, :, 8:] = 255  # Predicted half: white, must not appear under the tracks.
  centroids = np.zeros((2, 3, 1, 2), np.float32)
  centroids[:, :, 0] = [4.0, 4.0]
  rendered = task.render_summaries({"next_frame_prediction": strip, "token_centroids": centroids})
  assert set(rendered) == {"next_frame_prediction", "token_trajectories"}
  trajectories = rendered["token_trajectories"]
  assert trajectories.shape == (2, 3, 32, 32, 3)
  (colour,) = token_tracking.token_colours(1)
  np.testing.assert_array_equal(trajectories[:, :, 16, 16], np.broadcast_to(colour, (2, 3, 3)))
  np.testing.assert_array_equal(trajectories[:, :, 0, 0], 0)  # The real (black) frame.


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  config = tiny_configs.tiny_moog_config(
      tmp_path_factory.mktemp("tfds"), num_train_steps=2, log_every_steps=1,
      eval_every_steps=2, checkpoint_every_steps=2)
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(config, workdir, moog_task.MooGTask(config))
  return workdir


def test_cli_writes_a_gif_of_token_tracks_next_to_predictions(trained_workdir, tmp_path):
  out = tmp_path / "tokens.gif"
  result = subprocess.run(
      [sys.executable, "-m", "moog.visualize", f"--workdir={trained_workdir}", f"--out={out}",
       "--num_videos=2", "--num_tokens=4", "--scale=4", f"--still={tmp_path / 'still.png'}"],
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert 0.0 <= summary["bound_token_fraction"] <= 1.0
  assert summary["bound_token_fraction"] == 0.0 or 0.0 <= summary["token_consistency"] <= 1.0
  assert "Rendering frames" in result.stderr  # The tqdm progress bar.
  with Image.open(out) as gif:
    assert gif.n_frames == 4
    # Two videos stacked; input-with-tracks beside the prediction; 16x16 frames at scale 4.
    assert gif.size == (2 * 16 * 4, 2 * 16 * 4)
  assert summary["num_frames"] == 4 and summary["size"] == [128, 128]
  # A model this untrained binds no token: the NaN consistency comes with its reason.
  if summary["bound_token_fraction"] == 0.0:
    assert "no token is bound" in summary["note"]
  # The still: per video, real frames 1..3 above the predictions, 16x16 at scale 4.
  with Image.open(tmp_path / "still.png") as still:
    assert still.size == (3 * 16 * 4, 2 * 2 * 16 * 4)


def test_non_gif_output_is_refused_naming_gif(tmp_path):
  with pytest.raises(ValueError, match=r"only GIF output is supported"):
    visualize.visualize_run(str(tmp_path), str(tmp_path / "tokens.mp4"))
