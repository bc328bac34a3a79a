r"""MooG training-step speed as a fraction of this machine's dense-matmul peak.

Measures, in one run on the same machine:
1. the dense matmul peak (FLOP/s of a jitted square `a @ b`, `--peak_size`, in the
   config's `model.compute_dtype` at the backend's default precision, which is what the
   model's matmuls use: TF32 for float32 on NVIDIA GPUs);
2. for the config: XLA's FLOPs of one training step (`videolib.cost.xla_flops`: the
   step lowered for the CPU, so the count does not depend on the machine, with the time
   loop unrolled, since XLA counts a loop body once; forward + backward +
   remat recompute + optimizer) and the median wall time of the step as configured and
   fully unrolled, on synthetic input of the config's shapes; utilisation =
   (FLOPs / time) / peak; the seconds XLA takes to compile each variant and its
   scratch memory (`memory_analysis().temp_size_in_bytes`);
3. the input pipeline's batches/s for the same config, next to the train step's steps/s
   (the pipeline must be >= 5x faster);
4. with `--breakdown`, which parts hold the step back: forward + backward of each MooG
   part alone (encoder, predictor, corrector, pixel decoder, with the T time steps folded
   into the batch so there is no scan), its XLA FLOPs, time and fraction of the peak.
   What the parts do not account for is the scan, remat recompute and optimizer update;
5. with `--op_profile`, where the configured step's time goes by XLA operation: a
   `jax.profiler` trace of the timed steps, summed per kind of fused op (the op name
   without its numeric suffix): how many ops a step executes and their time per step.
   The op times add up to more than the step when ops run in parallel threads;
6. with `--forward`, the median time of the training-mode forward pass and loss alone
   (no gradient), as the official harness times it.

Steps compile with the trainer's XLA options (`train.compiler_options`);
`--xla_defaults` times them with XLA's defaults instead.

  python benchmarks/moog_train_speed.py --config=configs/moog_tiny.py
  python benchmarks/moog_train_speed.py --config=configs/moog_movi.py \
      --config.batch_size=1 --config.data.resolution=128 --steps=3 --breakdown
The official release's timing models, to set beside its own code's times
(docs/results.md, "Against the official MooG"):
  python benchmarks/moog_train_speed.py --config=configs/moog_official_speed.py:tiny \
      --steps=10 --pipeline_batches=0 --forward
On an accelerator, fill it (a 2048² matmul does not reach a GPU's peak):
  python benchmarks/moog_train_speed.py --config=configs/moog_movi.py \
      --config.batch_size=8 --steps=5 --pipeline_batches=0 --peak_size=8192

On backends that report it (GPU, TPU) the result also holds the device's peak memory in
use over the whole run (`device_peak_memory_gib`).

Prints one JSON object; `docs/results.md` quotes it with the machine it ran on.
"""

import collections
import glob
import gzip
import json
import os
import platform
import re
import statistics
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from moog import modules
from moog import task as moog_task
from videolib import cost
from videolib import train
from videolib.data import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "MooG config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed training steps (after one warm-up step).")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "Also time each model part alone.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 50,
                                         "Batches timed for the pipeline (0 = skip).")
_PEAK_SIZE = flags.DEFINE_integer("peak_size", 2048, "Side of the square matmul timed for the "
                                  "peak; 8192 fills a GPU.")
_OP_PROFILE = flags.DEFINE_bool("op_profile", False, "Also trace the timed steps and sum the "
                                "time per kind of XLA op.")
_FORWARD = flags.DEFINE_bool("forward", False, "Also time the training-mode forward + loss.")
_XLA_DEFAULTS = flags.DEFINE_bool("xla_defaults", False, "Compile with XLA's default options "
                                  "instead of the trainer's.")


def _compiler_options():
  return None if _XLA_DEFAULTS.value else train.compiler_options()


def matmul_peak_flops(size: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
  """FLOP/s of a square matmul, best of `repeats` (2 n^3 FLOPs per call)."""
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size**3 / min(times)


def _compiled_train_step(task, config):
  """(compiled step, init_state, abstract_state, batch spec, seconds to compile, FLOPs)."""
  spec = pipeline.batch_spec(config.data, config.batch_size)
  tx, schedule = train.make_optimizer(config, task)
  init_state, abstract_state = train.abstract_train_state(task, tx, spec, jax.random.key(0))
  step = train.make_train_step(task, tx, schedule, config)
  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=(0,)).lower(abstract_state, spec).compile(
      _compiler_options())
  seconds = time.perf_counter() - start
  return (compiled, init_state, abstract_state, spec, seconds,
          cost.xla_flops(step, abstract_state, spec))


def _temp_gib(compiled) -> float:
  """Scratch memory of the compiled step beyond its arguments and outputs, GiB."""
  return compiled.memory_analysis().temp_size_in_bytes / 2**30


def _random_batch(spec) -> dict:
  """A fixed batch of uniform noise with the spec's shapes and dtypes."""
  rng = np.random.default_rng(0)
  return {k: jnp.asarray(rng.uniform(size=s.shape).astype(s.dtype)) for k, s in spec.items()}


def _warmed_up(compiled, init_state, spec):
  """(state after one untimed step, the fixed random batch it ran on)."""
  state = jax.jit(init_state)(jax.random.key(0))
  batch = _random_batch(spec)
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  return state, batch


def _median_step_seconds(compiled, init_state, spec, steps: int) -> float:
  state, batch = _warmed_up(compiled, init_state, spec)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


# Trace events of the runtime and of Python, not XLA ops.
_NOT_OPS = ("ThunkExecutor", "$", "PjitFunction", "SlinkyThreadPool", "CommonPjRt",
            "ParseArguments")


def op_profile(compiled, init_state, spec, steps: int, top: int = 12) -> dict:
  """XLA op count and time per step, in total and for the `top` kinds of op."""
  state, batch = _warmed_up(compiled, init_state, spec)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(steps):
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as trace_file:
      events = json.load(trace_file)["traceEvents"]
  seconds, counts = collections.Counter(), collections.Counter()
  for event in events:
    if event.get("ph") == "X" and not event["name"].startswith(_NOT_OPS):
      kind = re.sub(r"[.\d]+$", "", event["name"])
      seconds[kind] += event.get("dur", 0) / 1e6 / steps
      counts[kind] += 1 / steps
  return dict(
      ops_per_step=round(sum(counts.values())),
      op_seconds_per_step=sum(seconds.values()),
      top_ops={kind: dict(ops_per_step=round(counts[kind]), seconds_per_step=spent)
               for kind, spent in seconds.most_common(top)})


def train_step_speed(config, steps: int, profile_ops: bool = False) -> dict:
  """FLOPs and median time of one training step, as configured and fully unrolled.

  XLA's cost analysis counts a while-loop body once, so the FLOPs of a rolled step
  (`model.scan_unroll=1`) miss T - 1 of the T time steps. The FLOPs are therefore taken
  from the same step compiled with the time loop fully unrolled (the identical
  computation as straight-line code; remat recompute included), and both variants are
  timed, unless the config already unrolls (`model.scan_unroll=0`): then they are one.
  """
  task = moog_task.MooGTask(config)
  compiled, init_state, abstract_state, spec, compile_seconds, configured_flops = (
      _compiled_train_step(task, config))
  seconds = _median_step_seconds(compiled, init_state, spec, steps)
  if config.model.scan_unroll == 0:
    unrolled, unrolled_compile_seconds, flops = compiled, compile_seconds, configured_flops
    unrolled_seconds = seconds
  else:
    unrolled, _, _, _, unrolled_compile_seconds, flops = _compiled_train_step(
        task.for_cost_analysis(config), config)
    unrolled_seconds = _median_step_seconds(unrolled, init_state, spec, steps)
  result = dict(
      train_step_flops=flops,
      configured_step_flops_as_counted_by_xla=configured_flops,
      train_step_seconds=seconds,
      unrolled_train_step_seconds=unrolled_seconds,
      compile_seconds=compile_seconds,
      unrolled_compile_seconds=unrolled_compile_seconds,
      temp_memory_gib=_temp_gib(compiled),
      unrolled_temp_memory_gib=_temp_gib(unrolled),
      params=train.count_params_per_part(abstract_state["params"])["total"])
  if profile_ops:
    result["op_profile"] = op_profile(compiled, init_state, spec, steps)
  return result


def _timed(fn, args, steps: int) -> tuple[float, float]:
  """(XLA FLOPs, median seconds) of a jitted `fn(*args)`."""
  compiled = jax.jit(fn).lower(*args).compile(_compiler_options())
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return cost.xla_flops(fn, *args), statistics.median(times)


def forward_speed(config, steps: int) -> dict:
  """XLA FLOPs and median time of the training-mode forward pass and loss (no gradient)."""
  task = moog_task.MooGTask(config)
  batch = _random_batch(pipeline.batch_spec(config.data, config.batch_size))
  params = jax.jit(task.init)(jax.random.key(0), batch)
  loss = lambda params, batch: task.loss_fn(params, batch, jax.random.key(1))[0]
  flops, seconds = _timed(loss, (params, batch), steps)
  return dict(forward_flops=flops, forward_seconds=seconds)


def part_breakdown(config, steps: int, peak: float) -> dict:
  """Forward + backward FLOPs, time and utilisation of each MooG part alone."""
  model = moog_task.MooGTask(config).model
  frames = config.batch_size * config.data.num_frames
  size = config.data.resolution
  factor = config.model.subsample_factor_train
  rng = jax.random.key(0)
  video = jax.random.uniform(rng, (frames, size, size, 3))
  state = jax.random.normal(rng, (frames, model.num_tokens, model.token_dim))
  tokens = jax.eval_shape(model.encoder.init_with_output, rng, video)[0]
  tokens = jax.random.normal(rng, tokens.shape)
  coords = modules.lattice_subsample(modules.grid_coordinates(size, size), factor)
  parts = {
      "encoder": (model.encoder, (video,)),
      "predictor": (model.predictor, (state,)),
      "corrector": (model.corrector, (state, tokens)),
      "decoder": (model.decoder, (state, coords)),
  }
  result = {}
  for name, (module, inputs) in parts.items():
    params = module.init(rng, *inputs)

    def loss(params, *inputs, module=module):
      return jnp.mean(jnp.square(module.apply(params, *inputs)))

    flops, seconds = _timed(jax.grad(loss), (params, *inputs), steps)
    result[name] = dict(gflops=flops / 1e9, seconds=seconds,
                        fraction_of_matmul_peak=flops / seconds / peak)
  return result


def pipeline_speed(config, batches: int) -> float:
  iterator = pipeline.make_train_iterator(config.data, global_batch_size=config.batch_size,
                                          seed=0)
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches / (time.perf_counter() - start)


def main(argv):
  del argv
  config = _CONFIG.value
  compute_dtype = config.model.get("compute_dtype", "float32")
  peak = matmul_peak_flops(_PEAK_SIZE.value, jnp.dtype(compute_dtype))
  result = dict(
      config=config_flags.get_config_filename(flags.FLAGS["config"]),
      machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
      backend=jax.default_backend(),
      device=jax.devices()[0].device_kind,
      jax=jax.__version__,
      batch_size=config.batch_size,
      resolution=config.data.resolution,
      num_frames=config.data.num_frames,
      compute_dtype=compute_dtype,
      remat=config.model.get("remat", False),
      matmul_peak_gflops=peak / 1e9,
      matmul_peak_size=_PEAK_SIZE.value,
      compiler_options=_compiler_options(),
  )
  result.update(train_step_speed(config, _STEPS.value, _OP_PROFILE.value))
  achieved = result["train_step_flops"] / result["train_step_seconds"]
  unrolled = result["train_step_flops"] / result["unrolled_train_step_seconds"]
  result.update(achieved_gflops=achieved / 1e9, fraction_of_matmul_peak=achieved / peak,
                unrolled_fraction_of_matmul_peak=unrolled / peak,
                train_steps_per_second=1 / result["train_step_seconds"])
  if _FORWARD.value:
    result.update(forward_speed(config, max(_STEPS.value, 3)))
  if _BREAKDOWN.value:
    result["breakdown"] = part_breakdown(config, max(_STEPS.value, 2), peak)
  if _PIPELINE_BATCHES.value:
    batches_per_second = pipeline_speed(config, _PIPELINE_BATCHES.value)
    result.update(pipeline_batches_per_second=batches_per_second,
                  pipeline_over_train_ratio=batches_per_second * result["train_step_seconds"])
  memory = jax.devices()[0].memory_stats()
  if memory and "peak_bytes_in_use" in memory:
    result["device_peak_memory_gib"] = memory["peak_bytes_in_use"] / 2**30
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
