r"""Wall-clock of the ViT backbone forward pass on all tokens vs MGTC-dropped tokens.

Compares measured speed-ups with the ideal ratio of analytic GFLOPs (`mgtc.flops`);
the target is a measured speed-up of at least 90% of the ideal one. Each setting is
jitted, warmed up, then timed round-robin (one run of every setting per round) so
load changes on a shared machine hit all settings alike; the median is reported.
The backbone is timed on precomputed kept indices; the motion scoring and top-k
selection are timed separately.

Usage:
  python benchmarks/mgtc_backbone_speed.py --model=s --num_frames=16 \
      --image_size=112 --batch_size=1 --rounds=9
"""
import argparse
import statistics
import time

import jax

from mgtc import flops
from mgtc import selection
from mgtc import vit

_CONFIGS = {"b": vit.vit_b_config, "s": vit.vit_s_config, "tiny": vit.vit_tiny_config}


def _parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", choices=sorted(_CONFIGS), default="s")
  parser.add_argument("--num_frames", type=int, default=16)
  parser.add_argument("--image_size", type=int, default=112)
  parser.add_argument("--batch_size", type=int, default=1)
  parser.add_argument("--drop_ratios", type=float, nargs="+", default=[0.25, 0.5])
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--warmup", type=int, default=1)
  return parser.parse_args()


def _time_once(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def main():
  args = _parse_args()
  config = _CONFIGS[args.model]()
  config.num_frames, config.image_size = args.num_frames, args.image_size
  model = vit.build_classifier(config)
  video = jax.random.uniform(
      jax.random.key(0),
      (args.batch_size, config.num_frames, config.image_size, config.image_size, 3))
  params = jax.jit(model.init, static_argnames="train")(
      jax.random.key(1), video, train=False)

  @jax.jit
  def forward_all(params, video):
    return model.apply(params, video, train=False)

  @jax.jit
  def forward_kept(params, video, indices):
    return model.apply(params, video, selection.KeptTokens(indices), train=False)

  settings = {0.0: (forward_all, (params, video))}
  select_fns = {}
  for ratio in args.drop_ratios:
    select_fns[ratio] = jax.jit(
        lambda v, r=ratio: selection.motion_guided_indices(v, r, config.patch_size))
    indices = jax.block_until_ready(select_fns[ratio](video))
    settings[ratio] = (forward_kept, (params, video, indices))

  for fn, fn_args in settings.values():
    for _ in range(args.warmup):
      _time_once(fn, *fn_args)
  for select in select_fns.values():
    _time_once(select, video)
  times = {ratio: [] for ratio in settings}
  select_times = {ratio: [] for ratio in select_fns}
  for _ in range(args.rounds):
    for ratio, (fn, fn_args) in settings.items():
      times[ratio].append(_time_once(fn, *fn_args))
    for ratio, select in select_fns.items():
      select_times[ratio].append(_time_once(select, video))

  print(f"devices: {jax.devices()}; model ViT-{args.model} "
        f"({config.depth} x {config.width}), batch {args.batch_size}, "
        f"{config.num_frames} x {config.image_size}^2, "
        f"median of {args.rounds} rounds")
  full_gflops = flops.gflops_per_view(config, 0.0, include_scoring=False)
  full_time = statistics.median(times[0.0])
  print(f"{'drop':>5} {'tokens':>7} {'GFLOPs/view':>12} {'median ms':>10} "
        f"{'speed-up':>9} {'ideal':>6} {'% of ideal':>10} {'select ms':>10}")
  for ratio in settings:
    gflops = flops.gflops_per_view(config, ratio, include_scoring=False)
    median = statistics.median(times[ratio])
    speedup, ideal = full_time / median, full_gflops / gflops
    select_ms = (statistics.median(select_times[ratio]) * 1e3
                 if ratio in select_times else 0.0)
    print(f"{ratio:>5.2f} {flops.kept_token_count(config, ratio):>7d} "
          f"{gflops:>12.2f} {median * 1e3:>10.1f} {speedup:>9.3f} {ideal:>6.3f} "
          f"{100 * speedup / ideal:>9.1f}% {select_ms:>10.2f}")


if __name__ == "__main__":
  main()
