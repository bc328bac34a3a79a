"""benchmarks/point_motion.py: distances from the query over visible entries only."""
import numpy as np

import benchmark_scripts

point_motion = benchmark_scripts.load("point_motion")


def test_displacements_count_only_visible_frames_of_valid_tracks_of_real_videos():
  batch = {
      "query_points": np.array([[[0, 2.0, 1.0], [0, 5.0, 5.0]], [[0, 1.0, 1.0]] * 2]),
      # [b=2, Q=2, T=3, (x, y)]: video 0 track 0 moves 3 px right, then 3-4-5 px.
      "target_points": np.array([
          [[[1, 2], [4, 2], [4, 6]], [[5, 5], [5, 5], [5, 5]]],
          [[[1, 1], [9, 9], [9, 9]], [[1, 1], [9, 9], [9, 9]]],
      ], np.float32),
      "occluded": np.array([[[0, 0, 0], [0, 1, 0]], [[0, 0, 0], [0, 0, 0]]], bool),
      "tracks_valid": np.array([[True, True], [True, True]]),
      "_mask": np.array([True, False]),  # Video 1 is padding.
  }
  distance, counted = point_motion.visible_displacements(batch)
  np.testing.assert_allclose(distance[0], [[0, 3, 5], [0, 0, 0]])
  np.testing.assert_array_equal(counted[0], [[1, 1, 1], [1, 0, 1]])
  assert not counted[1].any()
  rows = point_motion.motion_table(distance, counted)
  assert [row["visible_points"] for row in rows] == [2, 1, 2]
  assert rows[1]["mean_px"] == 3.0 and rows[1]["beyond_2px"] == 1.0
  assert rows[2]["median_px"] == 2.5 and rows[2]["beyond_4px"] == 0.5
  assert rows[2]["beyond_0.5px"] == 0.5


def test_never_moving_fraction_counts_tracks_within_half_a_pixel_on_every_counted_frame():
  distance = np.array([[[0.0, 0.2, 0.4], [0.0, 0.2, 3.0], [0.0, 9.0, 9.0], [0.0, 0.0, 0.0]]])
  counted = np.array([[[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]]], bool)
  # Track 1's move is on an uncounted frame; track 2 has only its query frame; track 3
  # has no counted frame and is left out.
  assert point_motion.never_moving_fraction(distance, counted) == 1.0
  counted[0, 1, 2] = True
  assert point_motion.never_moving_fraction(distance, counted) == 2 / 3


def test_patch_tracker_follows_a_textured_square_and_stays_on_a_still_scene():
  rng = np.random.default_rng(0)
  texture = rng.uniform(size=(6, 6, 3))
  video = np.zeros((1, 4, 24, 24, 3), np.float32)
  for t in range(4):  # The square moves 2 px right and 1 px down per frame.
    video[0, t, 5 + t:11 + t, 4 + 2 * t:10 + 2 * t] = texture
  queries = np.array([[[0, 7.5, 6.5], [0, 20.5, 20.5]]])  # On the square; background.
  tracks = point_motion.patch_tracker_predictions(video, queries)
  np.testing.assert_array_equal(tracks[0, 0], [[6.5 + 2 * t, 7.5 + t] for t in range(4)])
  # The flat background matches everywhere; the prior keeps the point where it was.
  np.testing.assert_array_equal(tracks[0, 1], [[20.5, 20.5]] * 4)
