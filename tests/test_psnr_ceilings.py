"""benchmarks/psnr_ceilings.py: its rows score the pixels the trainer scores, and its
degradations do what their names say."""
import jax
import numpy as np
import pytest

import benchmark_scripts
import tiny_configs
from moog import task as moog_task

psnr_ceilings = benchmark_scripts.load("psnr_ceilings")


def test_repeat_row_equals_the_trainers_eval_metric(tmp_path):
  config = tiny_configs.tiny_moog_config(str(tmp_path / "tfds"))
  videos = psnr_ceilings.validation_videos(config)
  assert videos.shape == (8, 4, 16, 16, 3)
  task = moog_task.MooGTask(config)
  batch = {"video": videos, "_mask": np.ones(len(videos), bool)}
  params = task.init(jax.random.key(0), batch)
  total, count = task.eval_fn(params, batch, jax.random.key(1))["psnr_repeat_previous_frame"]
  rows = psnr_ceilings.ceilings(videos, config.model.subsample_factor_eval, [1.0], [2])
  assert rows["repeat_previous_frame"] == pytest.approx(float(total / count), abs=0.01)


def test_area_average_is_block_means_repeated():
  frame = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  averaged = psnr_ceilings.area_average(frame, 2)[0, ..., 0]
  np.testing.assert_allclose(averaged, [[2.5, 2.5, 4.5, 4.5], [2.5, 2.5, 4.5, 4.5],
                                        [10.5, 10.5, 12.5, 12.5], [10.5, 10.5, 12.5, 12.5]])


def test_blur_keeps_flat_frames_and_mixes_only_space():
  flat = np.full((2, 3, 8, 8, 3), 0.25, np.float32)
  np.testing.assert_allclose(psnr_ceilings.gaussian_blur(flat, 1.5), flat, atol=1e-6)
  frames = np.zeros((2, 3, 8, 8, 3), np.float32)
  frames[1, 2, 4, 4, 0] = 1.0  # One pixel of one channel of one frame.
  blurred = psnr_ceilings.gaussian_blur(frames, 1.0)
  assert blurred[1, 2, ..., 0].sum() == pytest.approx(1.0, abs=1e-5)
  assert np.all(blurred[1, 2, ..., 1:] == 0) and np.all(blurred[0] == 0)
  assert np.all(blurred[1, :2] == 0)


def test_oracles_lose_psnr_as_they_lose_detail():
  rng = np.random.default_rng(0)
  videos = rng.uniform(size=(4, 3, 16, 16, 3)).astype(np.float32)
  rows = psnr_ceilings.ceilings(videos, 2, [0.5, 1.0, 2.0], [2, 4])
  blurs = [rows[f"frame_gaussian_blur_sigma_{s:g}"] for s in (0.5, 1.0, 2.0)]
  assert blurs[0] > blurs[1] > blurs[2]
  assert rows["frame_area_average_2"] > rows["frame_area_average_4"] > (
      rows["mean_colour_of_frame"])
