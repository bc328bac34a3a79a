"""The one trainer, shared by MooG and MGTC (big_vision style: one linear, commented loop).

Sections: workdir and mesh -> input pipeline -> shapes-first state -> restore or init ->
the jitted steps -> the loop (log, eval, summaries, checkpoints, preemption).

A *task* supplies what is model-specific: `videolib.task.Task` declares every method the
trainer calls, the five required ones (validate_config, init, loss_fn, eval_fn, summaries)
and the optional hooks with their defaults.
Everything else (sharding, optimizer, checkpoints, metrics, NaN guard) lives here once.

Train-state layout: {'step', 'params', 'opt_state', 'nonfinite_steps', 'last_nonfinite_step'}.
Randomness comes from named streams of `config.seed` (`rng_stream`): 'train' folds in the
step, so the state needs no RNG and a resumed run draws the same numbers as an
uninterrupted one.

Faults (tested by `tests/test_fault_injection.py`, figures in `docs/reliability.md`):
- SIGTERM/SIGINT: checkpoint at the current step, a `preempted` record in metrics.jsonl,
  exit code 0; a second signal ends the process at once (default action, exit -signal).
- Restart with the same command: resumes from the newest readable checkpoint (state, data
  position) and drops the metrics.jsonl records logged after it, which it logs again.
- Unwritable workdir or a disk too small for two checkpoints: OSError before any work.
- Non-finite loss or gradient: never applied; `nan_policy='stop'` raises naming the step,
  its metrics and the last good checkpoint (a stopped run saves nothing after it).
"""

import functools
import json
import math
import os
import shutil
import signal
import tempfile
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from jax.experimental import multihost_utils

from videolib import checkpoint
from videolib import cost
from videolib import metrics as metrics_lib
from videolib import optim
from videolib import sharding
from videolib import task as task_lib
from videolib import writers
from videolib.data import pipeline

PyTree = Any


Task = task_lib.Task

# Named random streams of a run; the numbers are fold-ins of `key(config.seed)`. 'init'
# is the root key itself, so parameters initialised before the streams were named are
# drawn alike.
_RNG_STREAMS = {"train": 1, "eval": 2, "summaries": 3}


def rng_stream(seed: int, name: str) -> jax.Array:
  """The root key of the random stream `name` ('init', 'train', 'eval' or 'summaries')."""
  root = jax.random.key(seed)
  if name == "init":
    return root
  return jax.random.fold_in(root, _RNG_STREAMS[name])


def checkpoint_config_sections(task: Task) -> tuple[str, ...]:
  """Config paths a checkpoint must match to be resumed or evaluated: 'model' and the task's."""
  return ("model",) + tuple(task.checkpoint_config_sections)


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or inf loss or gradient."""


def check_workdir_writable(workdir: str) -> None:
  """Fails at start-up, not at the first checkpoint an hour later."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_") as probe:
      probe.write(b"0" * 1024 * 1024)
      probe.flush()
      os.fsync(probe.fileno())
  except OSError as error:
    raise OSError(
        f"--workdir={workdir!r} is not writable ({error}). Pick a directory with free space "
        "that this user can write."
    ) from error


def check_checkpoint_space(workdir: str, abstract_state: PyTree) -> None:
  """Fails at start-up if `workdir`'s disk cannot hold two checkpoints of the state.

  Two because the newest complete checkpoint is kept while the next one is written. The
  size is the uncompressed state, an upper bound of what orbax writes. Object stores
  (`gs://...`) report no free space and are not checked.
  """
  if "://" in workdir:
    return
  checkpoint_bytes = sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
                         for leaf in jax.tree.leaves(abstract_state))
  free_bytes = shutil.disk_usage(workdir).free
  if free_bytes < 2 * checkpoint_bytes:
    raise OSError(
        f"--workdir={workdir!r} has {free_bytes / 2**20:.1f} MiB free, but two checkpoints "
        f"of this train state need {2 * checkpoint_bytes / 2**20:.1f} MiB. Free some space "
        "or pick a larger disk."
    )


def drop_metric_records_after(workdir: str, step: int | None) -> None:
  """Removes the `metrics.jsonl` records of steps after checkpoint `step` (all if None).

  A run that dies after its last checkpoint has logged steps that the resumed run logs
  again; dropping them on resume leaves one record per (step, split), all written by the
  run that went on. A line cut short by the kill does not parse and is dropped too.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()

  def keep(line: str) -> bool:
    try:
      return step is not None and json.loads(line)["step"] <= step
    except (json.JSONDecodeError, KeyError):
      return False

  kept = [line for line in lines if keep(line)]
  if len(kept) == len(lines):
    return
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)
  logging.warning("Dropped %d metrics.jsonl records after step %s, logged by the interrupted "
                  "run; the resumed run logs those steps again.", len(lines) - len(kept), step)


def make_optimizer(
    config: ml_collections.ConfigDict, task: Task
) -> tuple[optax.GradientTransformation, Callable]:
  """`config.optimizer`'s optimizer; parameters the task marks frozen are never updated.

  Leaves the task's `frozen_params` marks (e.g. a pretrained backbone under trained
  readout heads) get `optax.set_to_zero()`: no update, no weight decay, no optimizer
  state, so they stay bitwise equal to their loaded values. The task's `layer_ids`
  serve `config.optimizer.layer_decay` (see `optim`).
  """
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps,
                                      task.layer_ids())
  if task.frozen_params is None:
    return tx, schedule
  label = lambda params: jax.tree.map(lambda frozen: "frozen" if frozen else "trained",
                                      task.frozen_params(params))
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, label), schedule


def check_batch(task: Task, local_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Runs the task's host-side `validate_batch` (raises on bad inputs)."""
  task.validate_batch(local_batch)
  return local_batch


def validate_common_config(config: ml_collections.ConfigDict) -> None:
  """Checks of the fields every trainer config has; errors name the field."""
  for field in ("num_train_steps", "batch_size", "log_every_steps", "eval_every_steps",
                "checkpoint_every_steps"):
    if config[field] < 1:
      raise ValueError(f"config.{field}={config[field]} must be >= 1.")
  if config.nan_policy not in ("stop", "skip"):
    raise ValueError(f"config.nan_policy={config.nan_policy!r} must be 'stop' or 'skip'.")
  k = config.optimizer.grad_accumulation_steps
  if k < 1 or config.num_train_steps % k:
    raise ValueError(
        f"config.optimizer.grad_accumulation_steps={k} must be >= 1 and divide "
        f"config.num_train_steps={config.num_train_steps}."
    )


class _PreemptionWatch:
  """SIGTERM/SIGINT ask for a checkpoint and a clean exit; a second signal exits at once."""

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.signal_number = 0
    self._previous_handlers = {}

  def __enter__(self):
    for sig in self._SIGNALS:
      self._previous_handlers[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info):
    for sig, handler in self._previous_handlers.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    logging.warning("Signal %d: saving a checkpoint, then exiting. Send again to exit now.",
                    signum)
    self.requested = True
    self.signal_number = signum
    # The second signal gets the default action: the kernel ends the process even while
    # Python waits in XLA or in the checkpoint save (a Python handler would run only when
    # that returns). An interrupted save leaves only a tmp directory that orbax ignores.
    for sig in self._SIGNALS:
      signal.signal(sig, signal.SIG_DFL)

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.requested
    # All processes must stop at the same step; jax's preemption service agrees on it.
    return multihost_utils.reached_preemption_sync_point(step)


def _param_norm(params: PyTree) -> jax.Array:
  return optax.global_norm(params)


# jaxlib 0.10's XLA:CPU hands convolutions' weight gradients to YNNPACK, which runs them
# 4-5x slower than XLA's own (Eigen) kernels on MooG's encoder shapes; without its fusions
# the paper model's train step takes 19 % less time and the official tiny one's 25 % less
# (docs/results.md, "Against the official MooG"). A user's XLA_FLAGS setting wins.
_CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options() -> dict[str, str] | None:
  """XLA options for the jitted train, eval and summary steps (None: XLA's defaults).

  Only on CPU, only when this jaxlib knows the options (a later one may drop them).
  """
  if jax.default_backend() != "cpu" or "ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
    return None
  try:
    jax.jit(jnp.negative).lower(jnp.zeros(())).compile(_CPU_COMPILER_OPTIONS)
  except Exception:  # pylint: disable=broad-except  # XlaRuntimeError: unknown option.
    logging.info("XLA does not know %s; using its defaults.", sorted(_CPU_COMPILER_OPTIONS))
    return None
  return dict(_CPU_COMPILER_OPTIONS)


def make_train_step(
    task: Task, tx: optax.GradientTransformation, schedule: Callable, config
) -> Callable:
  """Builds `train_step(state, batch) -> (state, metrics)`; non-finite updates never land."""
  train_rng = rng_stream(config.seed, "train")
  accumulation = config.optimizer.grad_accumulation_steps

  def train_step(state, batch):
    step = state["step"]
    rng = jax.random.fold_in(train_rng, step)
    (loss, metrics), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(
        state["params"], batch, rng
    )
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_params = optax.apply_updates(state["params"], updates)
    keep_new = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = dict(
        step=step + 1,
        params=keep_new(new_params, state["params"]),
        opt_state=keep_new(new_opt_state, state["opt_state"]),
        nonfinite_steps=state["nonfinite_steps"] + (~finite).astype(jnp.int32),
        # Numbered like metrics.jsonl: update n is step n.
        last_nonfinite_step=jnp.where(finite, state["last_nonfinite_step"], step + 1),
    )
    metrics = dict(
        metrics,
        loss=loss,
        grad_norm=grad_norm,
        param_norm=_param_norm(new_state["params"]),
        learning_rate=schedule(step // accumulation),
    )
    return new_state, metrics

  return train_step


def abstract_train_state(
    task: Task, tx: optax.GradientTransformation, spec: dict, rng: jax.Array
) -> tuple[Callable[[jax.Array], PyTree], PyTree]:
  """Returns `(init_state, abstract_state)`: the init function and its output shapes."""

  def init_state(rng):
    params = task.init(rng, spec)
    return dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        nonfinite_steps=jnp.zeros((), jnp.int32),
        last_nonfinite_step=jnp.full((), -1, jnp.int32),
    )

  return init_state, jax.eval_shape(init_state, rng)


def count_params_per_part(params: PyTree) -> dict[str, int]:
  """Parameter count per top-level module (shapes suffice)."""
  counts = {}
  inner = params.get("params", params) if isinstance(params, dict) else params
  for name, subtree in inner.items():
    counts[name] = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(subtree))
  counts["total"] = sum(counts.values())
  return counts


class _Setup(NamedTuple):
  """What training, evaluation and `describe` share, built from shapes alone."""

  spec: dict[str, jax.ShapeDtypeStruct]  # One global batch.
  tx: optax.GradientTransformation
  schedule: Callable
  init_state: Callable[[jax.Array], PyTree]
  abstract_state: PyTree


def _set_up(config: ml_collections.ConfigDict, task: Task) -> _Setup:
  """Checks the config, then derives the batch shapes, the optimizer and the state shapes."""
  validate_common_config(config)
  task.validate_config(config)
  spec = pipeline.batch_spec(config.data, config.batch_size)
  tx, schedule = make_optimizer(config, task)
  init_state, abstract_state = abstract_train_state(
      task, tx, spec, rng_stream(config.seed, "init"))
  return _Setup(spec, tx, schedule, init_state, abstract_state)


def _make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_divisible(config.eval_batch_size, mesh)
  return mesh


def describe(config: ml_collections.ConfigDict, task: Task) -> dict[str, Any]:
  """Parameter counts per part and XLA FLOPs of one train step, from shapes alone."""
  setup = _set_up(config, task)
  abstract_state = setup.abstract_state
  train_step = make_train_step(task.for_cost_analysis(config), setup.tx, setup.schedule,
                               config)
  flops = cost.xla_flops(train_step, abstract_state, setup.spec)
  return dict(
      params=count_params_per_part(abstract_state["params"]),
      train_step_flops=flops,
      train_step=f"{flops / 1e9:,.1f} GFLOP per step at batch {config.batch_size} "
                 f"({flops / 1e9 / config.batch_size:,.2f} GFLOP per example; XLA's count, "
                 "2 FLOPs per multiply-add)",
      batch_size=config.batch_size,
  )


def _evaluate(params, config, mesh, eval_fn, task) -> tuple[dict[str, float], dict]:
  """Runs the padded eval split once.

  Returns the mask-weighted means (`metrics.finalize`'s rules, as the notebook's: NaN where
  nothing was scoreable) and the first (global) batch, for summaries.
  """
  eval_iter = pipeline.make_eval_iterator(config.data, global_batch_size=config.eval_batch_size)
  accumulated = None
  first_batch = None
  for batch_index, local_batch in enumerate(eval_iter):
    batch = sharding.host_to_global(check_batch(task, local_batch), mesh)
    first_batch = batch if first_batch is None else first_batch
    rng = jax.random.fold_in(rng_stream(config.seed, "eval"), batch_index)
    # Python floats: the host sums over the whole split in float64.
    sums = {name: (float(total), float(count))
            for name, (total, count) in jax.device_get(eval_fn(params, batch, rng)).items()}
    accumulated = metrics_lib.accumulate(accumulated, sums)
  return metrics_lib.finalize(accumulated or {}), first_batch


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, task: Task
) -> dict[str, float]:
  """Trains `task` as `config` says, resuming from `workdir` if it holds checkpoints.

  Returns the last logged train metrics and the last eval metrics (for tests and scripts).
  """
  # ---- Config, shapes, workdir, mesh --------------------------------------------------------
  setup = _set_up(config, task)
  check_workdir_writable(workdir)
  mesh = _make_mesh(config)
  sharding.check_batch_divisible(config.batch_size, mesh)
  logging.info("Processes: %d, devices: %d (local %d), mesh: %s", jax.process_count(),
               jax.device_count(), jax.local_device_count(), dict(mesh.shape))

  # ---- Input pipeline ---------------------------------------------------------------------
  train_iter = pipeline.make_train_iterator(
      config.data, global_batch_size=config.batch_size, seed=config.seed
  )
  batch_sharding = sharding.batch_sharding(mesh)

  # ---- Shapes first: the abstract state decides the shardings ------------------------------
  abstract_state = setup.abstract_state
  state_sharding = sharding.state_shardings(abstract_state, mesh, config.mesh)
  parameter_counts = count_params_per_part(abstract_state["params"])
  logging.info("Parameters per part: %s", parameter_counts)
  check_checkpoint_space(workdir, abstract_state)

  # ---- Restore, or initialise sharded at birth ---------------------------------------------
  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), max_to_keep=config.checkpoint_max_to_keep,
      # Async saves train on while a save is written, so a SIGKILL can lose up to one
      # interval plus the steps of one save; False bounds the loss by the interval.
      async_save=config.checkpoint_async, owner=True,
  )
  restored = checkpointer.restore_latest(
      sharding.with_shardings(abstract_state, state_sharding), config,
      check_sections=checkpoint_config_sections(task),
  )
  drop_metric_records_after(workdir, None if restored is None else int(restored[0]["step"]))
  if restored is not None:
    state, data_state = restored
    train_iter.set_state(data_state)
    logging.info("Resumed from %s at step %d.", checkpointer.directory, int(state["step"]))
  else:
    state = jax.jit(setup.init_state, out_shardings=state_sharding)(
        rng_stream(config.seed, "init"))
    if config.init_from:
      # Prefixes load only those top-level subtrees, e.g. a pretrained backbone under a
      # fresh head; the rest keeps its init.
      state["params"] = checkpoint.load_params(
          config.init_from, state["params"], config, prefixes=task.init_from_prefixes(config))
      logging.info("Initialised parameters from %s.", config.init_from)

  # ---- Jitted steps ---------------------------------------------------------------------------
  replicated = sharding.replicated(mesh)
  train_step = jax.jit(
      make_train_step(task, setup.tx, setup.schedule, config),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, replicated),
      donate_argnums=(0,),
      compiler_options=compiler_options(),
  )
  eval_fn = jax.jit(task.eval_fn, in_shardings=(state_sharding["params"], batch_sharding, None),
                    out_shardings=replicated, compiler_options=compiler_options())
  summaries_fn = jax.jit(task.summaries, in_shardings=(state_sharding["params"], batch_sharding,
                                                       None), out_shardings=replicated,
                         compiler_options=compiler_options())

  # ---- Loop -------------------------------------------------------------------------------------
  # TensorBoard forgets what an interrupted earlier attempt logged after the checkpoint,
  # as metrics.jsonl did above.
  writer = writers.MetricWriter(
      workdir, purge_step=0 if restored is None else int(state["step"]) + 1)
  if restored is None:
    writer.write_scalars(0, {f"params_{k}": v for k, v in parameter_counts.items()},
                         split="describe")
  first_step = int(state["step"])
  last_checked_nonfinite = int(state["nonfinite_steps"])
  last_finite_metrics: dict[str, float] = {}
  train_metrics: dict[str, float] = {}
  eval_metrics: dict[str, float] = {}
  if first_step >= config.num_train_steps:
    checkpointer.close()
    writer.close()
    message = (
        f"The run in {workdir} is complete: its newest checkpoint is at step {first_step} of "
        f"config.num_train_steps={config.num_train_steps}. To train further, re-run the same "
        f"command with a larger --config.num_train_steps (the learning-rate schedule follows "
        f"the new length); to score it, add --mode=eval.")
    logging.info(message)
    return dict(complete=True, step=first_step, message=message)
  # The bar advances when the host has the step's results (at logged steps), not when a
  # step is dispatched, and its clock pauses for compilation, evaluation and saving, so
  # its rate and ETA are those of training steps.
  progress = tqdm.tqdm(total=config.num_train_steps, initial=first_step, unit="step",
                       disable=jax.process_index() != 0, dynamic_ncols=True, smoothing=0.1)
  progress_step = first_step
  timer_step, timer_start = first_step, time.perf_counter()

  def advance_progress(step: int, **postfix) -> None:
    nonlocal progress_step
    if progress_step == first_step:
      progress.unpause()  # The first step includes compilation.
    progress.update(step - progress_step)
    progress_step = step
    if postfix:
      progress.set_postfix(postfix, refresh=False)

  def check_finite(step: int, logged_metrics: dict[str, float] | None = None):
    """Raises (stop policy) if any step since the last check was non-finite.

    Args:
      step: the current step.
      logged_metrics: this step's metrics, if it was logged; quoted when it is the
        offending step.
    """
    nonlocal last_checked_nonfinite
    count = int(state["nonfinite_steps"])
    if count == last_checked_nonfinite:
      return
    bad_step = int(state["last_nonfinite_step"])
    last_checked_nonfinite = count
    if config.nan_policy == "skip":
      logging.warning("Skipped %d non-finite steps so far (latest: %d).", count, bad_step)
      return
    checkpointer.wait()  # A save in flight is of finite state: let it complete, then name it.
    latest = checkpointer.latest_step()
    last_good = ("none saved yet" if latest is None else
                 f"{checkpointer.directory}/{latest} (kept; a stopped run saves nothing)")
    offending = logged_metrics if bad_step == step and logged_metrics else (
        "not logged (config.log_every_steps > 1)")
    raise NonFiniteLossError(
        f"Non-finite loss or gradient at step {bad_step} (checked at step {step}); the "
        f"update was not applied. Metrics of step {bad_step}: {offending}. Last finite "
        f"train metrics: {last_finite_metrics}. Last good checkpoint: {last_good}. Lower "
        "the learning rate, check the input data, or set config.nan_policy='skip'."
    )

  step = first_step
  with _PreemptionWatch() as preemption:
    try:
      while step < config.num_train_steps:
        batch = sharding.host_to_global(check_batch(task, next(train_iter)), mesh)
        state, metrics = train_step(state, batch)
        step += 1
        if step == first_step + 1:
          jax.block_until_ready(metrics)  # Compiled: the bar's clock starts now.
          advance_progress(step)

        if step % config.log_every_steps == 0 or step == config.num_train_steps:
          metrics = jax.device_get(metrics)
          elapsed = time.perf_counter() - timer_start
          steps_per_sec = (step - timer_step) / max(elapsed, 1e-9)
          train_metrics = {k: float(v) for k, v in metrics.items()}
          train_metrics.update(steps_per_sec=steps_per_sec,
                               examples_per_sec=steps_per_sec * config.batch_size)
          # Written before the check, so metrics.jsonl shows the offending values too.
          writer.write_scalars(step, train_metrics, split="train")
          check_finite(step, train_metrics)
          if all(np.isfinite(v) for v in train_metrics.values()):
            last_finite_metrics = train_metrics
          advance_progress(step, loss=f"{train_metrics['loss']:.4g}")
          timer_step, timer_start = step, time.perf_counter()

        if step % config.eval_every_steps == 0 or step == config.num_train_steps:
          advance_progress(step)
          eval_metrics, first_batch = _evaluate(state["params"], config, mesh, eval_fn, task)
          writer.write_scalars(step, eval_metrics, split=config.data.eval_split)
          if jax.process_index() == 0:
            progress.write(writers.format_eval_line(step, config.data.eval_split,
                                                    eval_metrics))
          if config.get("num_summary_videos", 4):  # 0: no video summaries.
            videos = jax.device_get(
                summaries_fn(state["params"], first_batch, rng_stream(config.seed, "summaries")))
            writer.write_videos(step, task.render_summaries(videos))
          progress.unpause()  # Evaluation is not training time.
          timer_step, timer_start = step, time.perf_counter()

        stop = preemption.should_stop(step)
        if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps or stop:
          check_finite(step)
          checkpointer.save(step, state, train_iter.get_state(), config)
          advance_progress(step)
          progress.unpause()  # Saving is not training time.
          timer_step, timer_start = step, time.perf_counter()
        if stop:
          writer.write_scalars(step, {"signal": preemption.signal_number}, split="preempted")
          logging.warning("Stopped at step %d after signal %d; checkpoint saved to %s/%d.",
                          step, preemption.signal_number, checkpointer.directory, step)
          break
    finally:
      progress.close()
      checkpointer.wait()
      checkpointer.close()
      writer.close()
  return dict(train_metrics, **{f"eval_{k}": v for k, v in eval_metrics.items()})


def evaluate(config: ml_collections.ConfigDict, workdir: str, task: Task) -> dict[str, float]:
  """Evaluates the newest checkpoint in `workdir` (else `config.init_from`) on the eval split.

  Writes `<workdir>/eval_<split>_step<N>.json` and a `metrics.jsonl` record; returns the
  metrics.
  """
  abstract_state = _set_up(config, task).abstract_state
  mesh = _make_mesh(config)
  state_sharding = sharding.state_shardings(abstract_state, mesh, config.mesh)
  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), max_to_keep=config.checkpoint_max_to_keep
  )
  restored = checkpointer.restore_latest(
      sharding.with_shardings(abstract_state, state_sharding), config,
      check_sections=checkpoint_config_sections(task),
  )
  checkpointer.close()
  if restored is not None:
    params, step = restored[0]["params"], int(restored[0]["step"])
  elif config.init_from:
    # No run of our own yet: evaluate the parameters `init_from` names (a workdir or .npz).
    abstract_params = sharding.with_shardings(abstract_state["params"], state_sharding["params"])
    params, step = checkpoint.load_params(config.init_from, abstract_params, config), 0
  else:
    raise FileNotFoundError(
        f"--mode=eval: no checkpoint in {checkpointer.directory} and no config.init_from. Train "
        "first, pass the workdir of a training run, or set --config.init_from=PATH."
    )
  os.makedirs(workdir, exist_ok=True)
  eval_fn = jax.jit(task.eval_fn, in_shardings=(state_sharding["params"],
                                                sharding.batch_sharding(mesh), None),
                    out_shardings=sharding.replicated(mesh), compiler_options=compiler_options())
  metrics, _ = _evaluate(params, config, mesh, eval_fn, task)
  split = config.data.eval_split
  record = dict(step=step, split=split, dataset=config.data.name, **metrics)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"eval_{split}_step{step}.json"), "w") as f:
      json.dump(record, f, indent=2)
  writer = writers.MetricWriter(workdir)
  writer.write_scalars(step, metrics, split=split)
  writer.close()
  return metrics
