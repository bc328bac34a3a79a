"""Multi-host start-up: `jax.distributed.initialize`, only when asked for.

Set `VIDEOLIB_DISTRIBUTED=1` on every process. On TPU pods, SLURM and Open MPI jax detects
the coordinator, process count and process id itself. Elsewhere also set
`VIDEOLIB_COORDINATOR=host:port`, `VIDEOLIB_NUM_PROCESSES` and `VIDEOLIB_PROCESS_ID`
(and optionally `VIDEOLIB_LOCAL_DEVICE_IDS=0,1`). `VIDEOLIB_INIT_TIMEOUT_S` (default 300)
bounds the wait for the coordinator, so a missing peer fails instead of hanging.
It is off by default because initialising on a plain single-host run fails or hangs.
"""

import os

import jax
from absl import logging


def maybe_initialize() -> None:
  if os.environ.get("VIDEOLIB_DISTRIBUTED", "0") != "1":
    return
  kwargs = dict(initialization_timeout=int(os.environ.get("VIDEOLIB_INIT_TIMEOUT_S", "300")))
  if "VIDEOLIB_COORDINATOR" in os.environ:
    try:
      kwargs.update(
          coordinator_address=os.environ["VIDEOLIB_COORDINATOR"],
          num_processes=int(os.environ["VIDEOLIB_NUM_PROCESSES"]),
          process_id=int(os.environ["VIDEOLIB_PROCESS_ID"]),
      )
    except KeyError as missing:
      raise ValueError(
          f"VIDEOLIB_COORDINATOR is set but {missing} is not: an explicit coordinator needs "
          "VIDEOLIB_NUM_PROCESSES and VIDEOLIB_PROCESS_ID on every process."
      ) from None
    if "VIDEOLIB_LOCAL_DEVICE_IDS" in os.environ:
      kwargs["local_device_ids"] = [
          int(i) for i in os.environ["VIDEOLIB_LOCAL_DEVICE_IDS"].split(",")
      ]
  logging.info("jax.distributed.initialize(%s)", kwargs)
  jax.distributed.initialize(**kwargs)
  logging.info("Process %d of %d, %d local devices, %d global.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
