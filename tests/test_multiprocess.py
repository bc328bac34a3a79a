"""Real multi-process runs: 2 processes on this machine joined by `jax.distributed`.

Each process gets 2 CPU devices (4 in all), connects to a coordinator on 127.0.0.1 and
exchanges collectives over gloo (jax 0.10's default for CPU). The trained run must match a
single-process run on the same global batches; the start-up must fail fast, with the
numbers, when settings are inconsistent or a peer never shows up.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import moog_tiny
from moog import task as moog_task
from videolib import checkpoint
from videolib import distributed
from videolib import optim
from videolib import sharding
from videolib import train
from videolib.data import pipeline

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "synthetic_movi/16x16_8f_train32_val16"
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
NUM_TRAIN_STEPS = 3
BATCH_SIZE = 8


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def process_env(process_id: int, port: int, **extra: str) -> dict[str, str]:
  """Environment of one CPU process of the run (no inherited XLA device-count flag)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(
      JAX_PLATFORMS="cpu",
      JAX_NUM_CPU_DEVICES=str(DEVICES_PER_PROCESS),
      CUDA_VISIBLE_DEVICES="",
      TF_CPP_MIN_LOG_LEVEL="2",
      VIDEOLIB_DISTRIBUTED="1",
      VIDEOLIB_COORDINATOR=f"127.0.0.1:{port}",
      VIDEOLIB_NUM_PROCESSES=str(NUM_PROCESSES),
      VIDEOLIB_PROCESS_ID=str(process_id),
      VIDEOLIB_INIT_TIMEOUT_S="120",
  )
  env.update(extra)
  return env


def config_overrides(data_dir: str) -> dict:
  """`configs/moog_tiny.py` shrunk to 16x16, 4 frames, 3 steps (flags and in-process)."""
  return {
      "data.name": DATASET,
      "data.data_dir": data_dir,
      "data.resolution": 16,
      "data.num_frames": 4,
      "data.num_eval_examples": 8,
      "batch_size": BATCH_SIZE,
      "eval_batch_size": 8,
      "num_train_steps": NUM_TRAIN_STEPS,
      "log_every_steps": 1,
      "eval_every_steps": NUM_TRAIN_STEPS,
      "checkpoint_every_steps": NUM_TRAIN_STEPS,
      "num_summary_videos": 1,
      "optimizer.warmup_steps": 1,
  }


def tiny_config(data_dir: str):
  config = moog_tiny.get_config()
  config.update_from_flattened_dict(config_overrides(data_dir))
  return config


def reference_run(config) -> tuple[list[float], dict]:
  """The trainer's step on one process, 4 devices, fed the 2 hosts' batches concatenated.

  With 2 processes the global batch is host 0's local batch followed by host 1's (the
  mesh lists process 0's devices first), so this is the same global batch sequence.
  """
  task = moog_task.MooGTask(config)
  config.mesh.num_devices = NUM_PROCESSES * DEVICES_PER_PROCESS
  mesh = sharding.make_mesh(config.mesh)
  hosts = [pipeline.make_train_iterator(config.data, global_batch_size=BATCH_SIZE,
                                        seed=config.seed, process_index=i,
                                        process_count=NUM_PROCESSES)
           for i in range(NUM_PROCESSES)]
  spec = pipeline.batch_spec(config.data, BATCH_SIZE)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  init_state, abstract = train.abstract_train_state(task, tx, spec, jax.random.key(config.seed))
  state_sharding = sharding.state_shardings(abstract, mesh, config.mesh)
  state = jax.jit(init_state, out_shardings=state_sharding)(jax.random.key(config.seed))
  step_fn = jax.jit(train.make_train_step(task, tx, schedule, config),
                    in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                    out_shardings=(state_sharding, sharding.replicated(mesh)))
  losses = []
  for _ in range(config.num_train_steps):
    local_batches = [next(host) for host in hosts]
    batch = {k: np.concatenate([b[k] for b in local_batches]) for k in local_batches[0]}
    state, metrics = step_fn(state, sharding.host_to_global(batch, mesh))
    losses.append(float(metrics["loss"]))
  return losses, jax.tree.map(np.asarray, state["params"])


def checkpointed_params(workdir: str, config) -> dict:
  task = moog_task.MooGTask(config)
  spec = pipeline.batch_spec(config.data, BATCH_SIZE)
  tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps)
  _, abstract = train.abstract_train_state(task, tx, spec, jax.random.key(0))
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda _: one_device, abstract)
  checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=3)
  state, _ = checkpointer.restore_latest(sharding.with_shardings(abstract, target), config)
  checkpointer.close()
  return jax.tree.map(np.asarray, state["params"])


def wait_all(processes, logs, timeout_s):
  deadline = time.monotonic() + timeout_s
  for process in processes:
    try:
      process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
      for other in processes:
        other.kill()
  outputs = []
  for log in logs:
    log.seek(0)
    outputs.append(log.read().decode(errors="replace"))
  return [p.returncode for p in processes], outputs


@pytest.mark.slow  # Two processes compile train, eval and summaries on shared cores.
def test_two_processes_train_like_one_process_on_the_same_global_batches(tmp_path):
  data_dir = str(tmp_path / "tfds")
  config = tiny_config(data_dir)
  pipeline.make_train_iterator(config.data, global_batch_size=BATCH_SIZE, seed=0)  # Prepare.
  workdir = tmp_path / "run"
  port = free_port()
  flags = [f"--config.{k}={v}" for k, v in config_overrides(data_dir).items()]
  command = [sys.executable, "-m", "moog.main", "--config=configs/moog_tiny.py",
             f"--workdir={workdir}", *flags]
  logs = [open(tmp_path / f"process_{i}.log", "w+b") for i in range(NUM_PROCESSES)]
  processes = [subprocess.Popen(command, cwd=REPO_ROOT, env=process_env(i, port),
                                stdout=log, stderr=subprocess.STDOUT)
               for i, log in enumerate(logs)]

  reference_losses, reference_params = reference_run(tiny_config(data_dir))

  returncodes, outputs = wait_all(processes, logs, timeout_s=900)
  assert returncodes == [0] * NUM_PROCESSES, "\n".join(o[-3000:] for o in outputs)
  assert "Process 1 of 2, 2 local devices, 4 global." in outputs[1]
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  train_records = [r for r in records if r["split"] == "train"]
  # One record per step: only process 0 writes metrics (and TensorBoard).
  assert [r["step"] for r in train_records] == list(range(1, NUM_TRAIN_STEPS + 1))
  assert len(os.listdir(workdir / "tensorboard")) == 1
  np.testing.assert_allclose([r["loss"] for r in train_records], reference_losses, rtol=1e-5)
  params = checkpointed_params(str(workdir), tiny_config(data_dir))
  for (path, actual), expected in zip(jax.tree_util.tree_leaves_with_path(params),
                                      jax.tree.leaves(reference_params)):
    np.testing.assert_allclose(actual, expected, atol=2e-5, err_msg=jax.tree_util.keystr(path))


def test_lone_processes_fail_within_the_timeout_naming_the_numbers(tmp_path):
  """Process 0 whose peer never starts, and process 1 whose coordinator never answers."""
  timeout_s = 3
  script = "from videolib import distributed; distributed.maybe_initialize()"
  ports = [free_port(), free_port()]
  logs = [open(tmp_path / f"lone_{i}.log", "w+b") for i in range(2)]
  started = time.monotonic()
  processes = [
      subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=log,
                       stderr=subprocess.STDOUT,
                       env=process_env(process_id, port, VIDEOLIB_INIT_TIMEOUT_S=str(timeout_s)))
      for process_id, port, log in zip((0, 1), ports, logs)
  ]
  returncodes, outputs = wait_all(processes, logs, timeout_s=60)
  elapsed = time.monotonic() - started

  assert returncodes == [1, 1], outputs
  for process_id, port, output in zip((0, 1), ports, outputs):
    assert "did not finish within VIDEOLIB_INIT_TIMEOUT_S=3 s" in output, output
    assert f"process {process_id} of 2 (coordinator 127.0.0.1:{port})" in output, output
  assert elapsed < 30  # Python start-up plus the 3 s timeout, not jax's 300 s default.


@pytest.mark.parametrize("env,message", [
    (dict(VIDEOLIB_NUM_PROCESSES="2", VIDEOLIB_PROCESS_ID="2"),
     r"VIDEOLIB_PROCESS_ID=2 must be in \[0, VIDEOLIB_NUM_PROCESSES=2\)"),
    (dict(VIDEOLIB_NUM_PROCESSES="0", VIDEOLIB_PROCESS_ID="0"),
     r"VIDEOLIB_PROCESS_ID=0 must be in \[0, VIDEOLIB_NUM_PROCESSES=0\)"),
    (dict(VIDEOLIB_NUM_PROCESSES="two", VIDEOLIB_PROCESS_ID="0"),
     "VIDEOLIB_NUM_PROCESSES='two' is not an integer"),
    (dict(VIDEOLIB_PROCESS_ID="0"), "set but VIDEOLIB_NUM_PROCESSES is not"),
    (dict(VIDEOLIB_NUM_PROCESSES="2", VIDEOLIB_PROCESS_ID="0", VIDEOLIB_INIT_TIMEOUT_S="0"),
     "VIDEOLIB_INIT_TIMEOUT_S=0 must be >= 1"),
])
def test_inconsistent_process_settings_are_refused_before_connecting(env, message):
  with pytest.raises(ValueError, match=message):
    distributed.initialize_kwargs(dict(env, VIDEOLIB_COORDINATOR="127.0.0.1:1"))


def test_explicit_settings_become_initialize_arguments():
  kwargs = distributed.initialize_kwargs(dict(
      VIDEOLIB_COORDINATOR="10.0.0.1:8476", VIDEOLIB_NUM_PROCESSES="4",
      VIDEOLIB_PROCESS_ID="3", VIDEOLIB_LOCAL_DEVICE_IDS="2,3", VIDEOLIB_INIT_TIMEOUT_S="60"))
  assert kwargs == dict(coordinator_address="10.0.0.1:8476", num_processes=4, process_id=3,
                        local_device_ids=[2, 3], initialization_timeout=60)
  # TPU pods, SLURM, Open MPI: only the timeout; jax detects the rest.
  assert distributed.initialize_kwargs({}) == dict(initialization_timeout=300)
