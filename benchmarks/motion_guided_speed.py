r"""Wall-clock cost of motion-guided correction (moog/motion_guided.py) at paper sizes.

Times, on one device, the MooG forward pass in evaluation mode over a clip and, separately,
one corrector call, for plain MooG and the gather path (frames t >= 1 keep K = N -
floor(r N) encoder tokens) at each drop ratio r, next to the multiply-add ratio that
`motion_guided.corrector_gmacs_for_config` predicts for the corrector.

  python benchmarks/motion_guided_speed.py --config=configs/moog_movi.py \
      --config.data.resolution=128 --ratios=0.25,0.5

Prints one JSON object; results in docs/results.md, "Motion-guided correction in MooG".
"""

import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from moog import model as moog_model
from moog import motion_guided

_CONFIG = config_flags.DEFINE_config_file("config", None, "MooG config file.", lock_config=True)
_RATIOS = flags.DEFINE_list("ratios", ["0.25", "0.5"], "Drop ratios of the gather path.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (after one warm-up call).")


def _median_seconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  config = _CONFIG.value
  resolution, num_frames = config.data.resolution, config.data.num_frames
  plain = moog_model.build_moog(config.model)
  video = jax.random.uniform(jax.random.key(0), (1, num_frames, resolution, resolution, 3))
  variables = jax.jit(lambda: plain.init(
      {"params": jax.random.key(1), "default": jax.random.key(2)}, video, train=False))()
  rngs = {"default": jax.random.key(3)}
  tokens = jax.jit(lambda v: plain.apply(variables, v, method=plain.encode))(video)[:, 0]
  state = jnp.zeros((1, plain.num_tokens, plain.token_dim))

  def corrector_seconds(num_kept: int) -> float:
    correct = jax.jit(lambda s, t: plain.apply(variables, s, t, method=plain.correct))
    return _median_seconds(correct, state, tokens[:, :num_kept])

  forward = lambda model: jax.jit(
      lambda v: model.apply(variables, v, train=False, rngs=rngs)["state"])
  num_tokens = tokens.shape[-2]
  result = dict(
      config=config_flags.get_config_filename(flags.FLAGS["config"]),
      machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
      backend=jax.default_backend(), resolution=resolution, num_frames=num_frames,
      encoder_tokens=num_tokens,
      plain=dict(forward_seconds=_median_seconds(forward(plain), video),
                 corrector_seconds=corrector_seconds(num_tokens)))
  full_gmacs = motion_guided.corrector_gmacs_for_config(config.model, resolution)
  for ratio in map(float, _RATIOS.value):
    num_kept = motion_guided.num_kept_tokens(num_tokens, ratio)
    gathered = motion_guided.gathered_from(plain, ratio)
    seconds = corrector_seconds(num_kept)
    result[f"gather_{ratio}"] = dict(
        kept_tokens=num_kept,
        forward_seconds=_median_seconds(forward(gathered), video),
        corrector_seconds=seconds,
        corrector_time_ratio=seconds / result["plain"]["corrector_seconds"],
        corrector_gmac_ratio=motion_guided.corrector_gmacs_for_config(
            config.model, resolution, ratio) / full_gmacs)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
