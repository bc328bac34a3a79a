"""Compute cost of jax functions, counted the same way on every machine."""
from typing import Any, Callable

import jax
import numpy as np


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
  """XLA's FLOP count (2 per multiply-add) of `fn(*args)`; args may be ShapeDtypeStructs.

  Counted on the module lowered for the CPU and not yet optimised, so the number does
  not depend on the machine. The compiled module's count does: for a GPU, XLA hands
  matmuls and convolutions to cuBLAS / cuDNN custom calls that its cost analysis does
  not count (on an H100 it saw 2.5 of the 14 TFLOP of the paper config's batch-8 step),
  and jax has no cost analysis of a module lowered for a GPU. Either way a loop body
  counts once: count loops over time on an unrolled copy.
  """
  on_cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  args = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), args)
  cost = jax.jit(fn, in_shardings=on_cpu).lower(*args).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))
