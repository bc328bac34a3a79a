"""Multi-host start-up: `jax.distributed.initialize`, only when asked for.

Set `VIDEOLIB_DISTRIBUTED=1` on every process; it is off by default because initialising on
a plain single-host run fails or hangs. On TPU pods, SLURM and Open MPI jax detects the
coordinator, process count and process id itself. Elsewhere also set
`VIDEOLIB_COORDINATOR=host:port`, `VIDEOLIB_NUM_PROCESSES` and `VIDEOLIB_PROCESS_ID`
(and optionally `VIDEOLIB_LOCAL_DEVICE_IDS=0,1`: the accelerators this process owns).

`VIDEOLIB_INIT_TIMEOUT_S` (default 300) bounds the wait for the coordinator and the other
processes. When it runs out, jax's coordination client aborts the process from C++ with an
opaque `DEADLINE_EXCEEDED ... RegisterTask`; a watchdog here fires first and exits with a
message naming the coordinator, the process id, the process count and the timeout.

CPU processes (tests, fake devices) exchange collectives over gloo, jax 0.10's default
`jax_cpu_collectives_implementation`; GPUs use NCCL and TPUs ICI/DCN without any setting.
"""

import os
import sys
import threading

import jax
from absl import logging

# jax's own deadline is set this much later than ours, so the watchdog explains the failure.
_JAX_TIMEOUT_MARGIN_S = 30


def _int_from_env(environ: dict[str, str], name: str) -> int:
  value = environ.get(name)
  if value is None:
    raise ValueError(
        f"VIDEOLIB_COORDINATOR is set but {name} is not: an explicit coordinator needs "
        "VIDEOLIB_NUM_PROCESSES and VIDEOLIB_PROCESS_ID on every process."
    )
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not an integer.") from None


def initialize_kwargs(environ: dict[str, str]) -> dict:
  """`jax.distributed.initialize` arguments from `VIDEOLIB_*` variables (checked up front)."""
  timeout_s = int(environ.get("VIDEOLIB_INIT_TIMEOUT_S", "300"))
  if timeout_s < 1:
    raise ValueError(f"VIDEOLIB_INIT_TIMEOUT_S={timeout_s} must be >= 1 (seconds).")
  kwargs = dict(initialization_timeout=timeout_s)
  if "VIDEOLIB_COORDINATOR" not in environ:
    return kwargs  # TPU, SLURM, Open MPI: jax detects the rest.
  num_processes = _int_from_env(environ, "VIDEOLIB_NUM_PROCESSES")
  process_id = _int_from_env(environ, "VIDEOLIB_PROCESS_ID")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(
        f"VIDEOLIB_PROCESS_ID={process_id} must be in [0, VIDEOLIB_NUM_PROCESSES="
        f"{num_processes})."
    )
  kwargs.update(
      coordinator_address=environ["VIDEOLIB_COORDINATOR"],
      num_processes=num_processes,
      process_id=process_id,
  )
  if "VIDEOLIB_LOCAL_DEVICE_IDS" in environ:
    kwargs["local_device_ids"] = [
        int(i) for i in environ["VIDEOLIB_LOCAL_DEVICE_IDS"].split(",")
    ]
  return kwargs


def _start_watchdog(kwargs: dict) -> threading.Event:
  """Exits the process with an explanation unless the returned event is set in time."""
  done = threading.Event()
  timeout_s = kwargs["initialization_timeout"]
  who = (
      f"process {kwargs['process_id']} of {kwargs['num_processes']} (coordinator "
      f"{kwargs['coordinator_address']})" if "coordinator_address" in kwargs
      else "this process (coordinator and process count auto-detected)"
  )

  def watch():
    if done.wait(timeout_s):
      return
    sys.stderr.write(
        f"videolib.distributed: jax.distributed.initialize did not finish within "
        f"VIDEOLIB_INIT_TIMEOUT_S={timeout_s} s for {who}. The coordinator never answered "
        "or not every process joined: check that all processes were started, that they "
        "agree on VIDEOLIB_NUM_PROCESSES and VIDEOLIB_COORDINATOR, that each has its own "
        "VIDEOLIB_PROCESS_ID, and that process 0's host:port is reachable from here.\n"
    )
    sys.stderr.flush()
    os._exit(1)  # The main thread is blocked inside C++; nothing else can stop it.

  threading.Thread(target=watch, name="distributed-init-watchdog", daemon=True).start()
  return done


def maybe_initialize() -> None:
  """Joins the multi-process run when `VIDEOLIB_DISTRIBUTED=1`; does nothing otherwise.

  Must run before any JAX computation. Raises ValueError on inconsistent settings; exits
  with a message when the coordinator or a peer does not show up in time.
  """
  if os.environ.get("VIDEOLIB_DISTRIBUTED", "0") != "1":
    return
  kwargs = initialize_kwargs(dict(os.environ))
  logging.info("jax.distributed.initialize(%s)", kwargs)
  done = _start_watchdog(kwargs)
  jax.distributed.initialize(
      **dict(kwargs, initialization_timeout=kwargs["initialization_timeout"]
             + _JAX_TIMEOUT_MARGIN_S)
  )
  done.set()
  expected = kwargs.get("num_processes")
  if expected is not None and jax.process_count() != expected:
    raise RuntimeError(
        f"VIDEOLIB_NUM_PROCESSES={expected} but jax reports {jax.process_count()} processes."
    )
  logging.info("Process %d of %d, %d local devices, %d global.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
