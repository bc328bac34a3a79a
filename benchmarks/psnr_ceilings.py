r"""How sharp a next-frame prediction must be to beat repeating the previous frame.

No model is trained. On the config's validation clips (the trainer's eval iterator: the
same videos, windows and eval pixel lattice as `psnr_frames_1plus`), frames 1..T-1 are
scored with the trainer's per-image PSNR against predictors that are told the answer
but lose detail, next to the trivial ones:

  * `repeat_previous_frame`: the baseline the issue names (frame t-1 as is);
  * `mean_colour_of_frame`: frame t replaced by its mean colour, an upper bound on the
    "mean colour" plateau that tiny MooG sits on for its first ~4,000 steps;
  * `frame_gaussian_blur_sigma_S`: frame t itself, Gaussian-blurred with a standard
    deviation of S pixels (all motion known exactly, detail finer than ~S lost);
  * `frame_area_average_K`: frame t itself at K x fewer pixels per side (K x K block
    means, upsampled by repetition); K = the encoder's total stride is one colour per
    encoder token;
  * `previous_frame_gaussian_blur_sigma_S`: a blurred copy of frame t-1.

A model whose prediction is no sharper than one of the oracle rows cannot score above it,
so the rows bracket what next-frame PSNR a model of a given sharpness can reach on this
data. It also prints the spread of the repeat baseline over videos (it averages
per-image PSNR, which rewards the near-static videos).

  python benchmarks/psnr_ceilings.py --config=configs/moog_tiny.py

Results: docs/results.md, "MooG model and training".
"""

import json

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
from scipy import ndimage

from moog import model as moog_model
from moog import modules
from videolib.data import pipeline


def validation_videos(config) -> np.ndarray:
  """The first `data.num_eval_examples` validation clips, float [V, T, H, W, 3] in [0, 1]."""
  count = config.data.num_eval_examples
  iterator = pipeline.make_eval_iterator(config.data, global_batch_size=config.eval_batch_size,
                                         process_index=0, process_count=1)
  videos = [batch["video"][batch["_mask"]] for batch in iterator]
  return np.concatenate(videos)[:count]


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
  """Blurs the two spatial axes of `[..., H, W, C]` (edges reflected)."""
  sigmas = (0.0,) * (frames.ndim - 3) + (sigma, sigma, 0.0)
  return ndimage.gaussian_filter(frames, sigmas, mode="reflect")


def area_average(frames: np.ndarray, factor: int) -> np.ndarray:
  """K x K block means of `[..., H, W, C]`, repeated back to H x W."""
  *lead, height, width, channels = frames.shape
  blocks = frames.reshape(*lead, height // factor, factor, width // factor, factor, channels)
  means = blocks.mean(axis=(-4, -2))
  return np.repeat(np.repeat(means, factor, axis=-3), factor, axis=-2)


def lattice(frames: np.ndarray, factor: int) -> jax.Array:
  """The pixels the trainer scores at evaluation (the lattice with offset 0)."""
  return modules.lattice_subsample(jnp.asarray(frames), factor)


def predictors(videos: np.ndarray, sigmas, area_factors) -> dict[str, np.ndarray]:
  """Each predictor's guess of frames 1..T-1, `[V, T-1, H, W, 3]`."""
  current, previous = videos[:, 1:], videos[:, :-1]
  guesses = {
      "repeat_previous_frame": previous,
      "mean_colour_of_frame": np.broadcast_to(
          current.mean(axis=(-3, -2), keepdims=True), current.shape),
  }
  for sigma in sigmas:
    guesses[f"frame_gaussian_blur_sigma_{sigma:g}"] = gaussian_blur(current, sigma)
  for factor in area_factors:
    guesses[f"frame_area_average_{factor}"] = area_average(current, factor)
  for sigma in sigmas:
    guesses[f"previous_frame_gaussian_blur_sigma_{sigma:g}"] = gaussian_blur(previous, sigma)
  return guesses


def ceilings(videos: np.ndarray, eval_factor: int, sigmas, area_factors) -> dict:
  """PSNR (dB, mean over videos and frames 1..T-1) of every predictor on the eval lattice."""
  targets = lattice(videos[:, 1:], eval_factor)
  result = {}
  for name, guess in predictors(videos, sigmas, area_factors).items():
    per_image = moog_model.psnr_per_image(lattice(guess, eval_factor), targets)
    result[name] = round(float(jnp.mean(per_image)), 2)
  return result


def repeat_spread(videos: np.ndarray, eval_factor: int) -> dict:
  """Quartiles over videos of the repeat baseline's per-video mean PSNR."""
  targets = lattice(videos, eval_factor)
  per_video = np.asarray(jnp.mean(
      moog_model.psnr_per_image(targets[:, :-1], targets[:, 1:]), axis=1))
  quartiles = np.percentile(per_video, [0, 25, 50, 75, 100])
  return {"repeat_previous_frame_per_video_quartiles":
          [round(float(q), 2) for q in quartiles]}


def main(argv):
  del argv
  config = flags.FLAGS.config
  videos = validation_videos(config)
  eval_factor = config.model.subsample_factor_eval
  result = dict(config=config_flags.get_config_filename(flags.FLAGS["config"]),
                dataset=config.data.name, videos=len(videos), frames=videos.shape[1],
                eval_lattice=eval_factor)
  result.update(ceilings(videos, eval_factor, [float(s) for s in flags.FLAGS.sigmas],
                         [int(k) for k in flags.FLAGS.area_factors]))
  result.update(repeat_spread(videos, eval_factor))
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  # Flags are defined only when this runs as a script, so tests can import the functions
  # next to modules that define --config themselves.
  config_flags.DEFINE_config_file(
      "config", "configs/moog_tiny.py", "MooG config file (its data and eval lattice).",
      lock_config=True)
  flags.DEFINE_list("sigmas", ["0.5", "0.75", "1", "1.5", "2"],
                    "Gaussian blur standard deviations, pixels.")
  flags.DEFINE_list("area_factors", ["2", "4", "8"], "Block sizes of the area-averaged frames.")
  app.run(main)
