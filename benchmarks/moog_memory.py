r"""Memory of the paper MooG: parameters, activations with and without remat, bf16 speed.

  python benchmarks/moog_memory.py                       # paper config, 128x128, 8 frames
  python benchmarks/moog_memory.py --timing_resolution=32 --timing_steps=2

Three measurements of `configs/moog_movi.py` (the paper model), on one device:

1. Parameter count per part, and the bytes of parameters plus AdamW state (float32).
2. Activation memory per example of the jitted train step, with `model.remat` on and off,
   from XLA's buffer assignment of the compiled step (`compiled.memory_analysis()`; shapes
   only, nothing runs). The step is compiled for batch 1 and batch 2; the difference of
   their temporary buffers is the per-example cost (batch-independent temporaries, such as
   the optimizer update's, cancel).
3. Train-step time with `model.compute_dtype` float32 and bfloat16 at batch 1, measured
   over `--timing_steps` steps after a warm-up step (at `--timing_resolution`, smaller than
   128 so it finishes in minutes on a CPU).

Prints one JSON object; `docs/scaling.md` records a run.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from configs import moog_movi
from moog import task as moog_task
from videolib import train

_RESOLUTION = flags.DEFINE_integer("resolution", 128, "Frame size for the memory analysis.")
_TIMING_RESOLUTION = flags.DEFINE_integer(
    "timing_resolution", 64, "Frame size for the float32 / bfloat16 step timing.")
_TIMING_STEPS = flags.DEFINE_integer("timing_steps", 2, "Timed steps per dtype (after warm-up).")
_SKIP_TIMING = flags.DEFINE_bool("skip_timing", False, "Only count and analyse memory.")

MIB = 2**20


def paper_config(*, remat: bool = True, compute_dtype: str = "float32"):
  config = moog_movi.get_config()
  config.model.remat = remat
  config.model.compute_dtype = compute_dtype
  return config


def train_step_parts(config, batch_size: int, resolution: int):
  """(init_state, abstract_state, train_step, batch_spec) of the trainer for this config."""
  task = moog_task.MooGTask(config)
  spec = {"video": jax.ShapeDtypeStruct(
      (batch_size, config.data.num_frames, resolution, resolution, 3), jnp.float32)}
  tx, schedule = train.make_optimizer(config, task)
  init_state, abstract = train.abstract_train_state(task, tx, spec, jax.random.key(0))
  return init_state, abstract, train.make_train_step(task, tx, schedule, config), spec


def compiled_temp_bytes(config, batch_size: int, resolution: int) -> int:
  """Temporary (non-argument, non-output) bytes of the compiled, donated train step."""
  _, abstract, step, spec = train_step_parts(config, batch_size, resolution)
  compiled = jax.jit(step, donate_argnums=0).lower(abstract, spec).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def activation_memory(resolution: int) -> dict:
  """Per-example activation MiB with and without remat (compiled, never run)."""
  result = {}
  for remat in (True, False):
    config = paper_config(remat=remat)
    started = time.perf_counter()
    one, two = (compiled_temp_bytes(config, b, resolution) for b in (1, 2))
    result["remat" if remat else "no_remat"] = dict(
        per_example_mib=round((two - one) / MIB, 1),
        temp_mib_batch_1=round(one / MIB, 1),
        temp_mib_batch_2=round(two / MIB, 1),
        compile_s=round(time.perf_counter() - started, 1),
    )
  return result


def step_time(compute_dtype: str, resolution: int, num_steps: int) -> dict:
  """Seconds per train step at batch 1 (after one warm-up step), and the final loss."""
  config = paper_config(compute_dtype=compute_dtype)
  init_state, _, step, spec = train_step_parts(config, 1, resolution)
  state = jax.jit(init_state)(jax.random.key(0))
  video = jax.random.uniform(jax.random.key(1), spec["video"].shape)
  step = jax.jit(step, donate_argnums=0)
  started = time.perf_counter()
  state, metrics = step(state, {"video": video})
  jax.block_until_ready(metrics)
  first_step_s = time.perf_counter() - started
  started = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = step(state, {"video": video})
  jax.block_until_ready(metrics)
  return dict(
      seconds_per_step=round((time.perf_counter() - started) / num_steps, 2),
      compile_and_first_step_s=round(first_step_s, 1),
      loss=float(metrics["loss"]),
  )


def main(argv):
  del argv
  config = paper_config()
  _, abstract, _, _ = train_step_parts(config, 1, _RESOLUTION.value)
  params = train.count_params_per_part(abstract["params"])
  state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract))
  report = dict(
      machine=dict(platform=platform.platform(), processor=platform.processor(),
                   cpu_count=os.cpu_count(), load_average=os.getloadavg(),
                   device=str(jax.devices()[0]), jax=jax.__version__),
      resolution=_RESOLUTION.value,
      num_frames=config.data.num_frames,
      params=params,
      params_and_adamw_state_mib=round(state_bytes / MIB, 1),
      activations=activation_memory(_RESOLUTION.value),
  )
  print(json.dumps(report, indent=2), flush=True)
  if not _SKIP_TIMING.value:
    report["timing"] = dict(
        resolution=_TIMING_RESOLUTION.value,
        batch_size=1,
        float32=step_time("float32", _TIMING_RESOLUTION.value, _TIMING_STEPS.value),
        bfloat16=step_time("bfloat16", _TIMING_RESOLUTION.value, _TIMING_STEPS.value),
    )
    report["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
  app.run(main)
