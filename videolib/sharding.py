"""One device mesh for the whole run, and how arrays are laid out on it.

The mesh has two axes, `data` and `fsdp`. Batches are split over both (every device holds a
different slice of the batch). Parameters and optimizer state are replicated over `data`
and, when `fsdp > 1`, their largest divisible dimension is split over `fsdp` (ZeRO-3 style;
XLA inserts the all-gathers). Axes are `AxisType.Auto` so the compiler propagates shardings
from the few annotations we give (big_vision style); jax 0.10 defaults `make_mesh` to
Explicit axes, hence the explicit argument.

`config.mesh.num_devices` (default -1: all) builds the mesh from the first n devices only,
so one process with 8 simulated CPU devices can also run the 1- and 4-device versions of a
run (parity tests, restoring a checkpoint on a smaller topology). Multi-process runs must
use every device: each process feeds its own devices.
"""

import math
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXES = ("data", "fsdp")


def default_mesh_config() -> ml_collections.ConfigDict:
  """`data: -1` takes every device not used by `fsdp`; `num_devices: -1` uses all devices.

  `fsdp_min_size`: arrays with fewer elements stay replicated even when `fsdp > 1` (the
  all-gather would cost more than the memory it saves).
  """
  return ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**14, num_devices=-1))


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """Resolves `-1` and checks that the mesh covers exactly the devices there are."""
  data, fsdp = mesh_config.data, mesh_config.fsdp
  if fsdp < 1:
    raise ValueError(f"config.mesh.fsdp={fsdp} must be >= 1.")
  if data == -1:
    if num_devices % fsdp:
      raise ValueError(
          f"config.mesh.fsdp={fsdp} does not divide the device count {num_devices}."
      )
    data = num_devices // fsdp
  if data * fsdp != num_devices:
    raise ValueError(
        f"config.mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, but there are "
        f"{num_devices}. Set config.mesh.data=-1 to use all devices for data parallelism."
    )
  return data, fsdp


def mesh_devices(mesh_config: ml_collections.ConfigDict) -> list[jax.Device]:
  """The devices the mesh spans: all of them, or the first `config.mesh.num_devices`."""
  devices = jax.devices()
  num_devices = mesh_config.get("num_devices", -1)
  if num_devices == -1 or num_devices == len(devices):
    return devices
  if not 1 <= num_devices <= len(devices):
    raise ValueError(
        f"config.mesh.num_devices={num_devices} must be -1 (all) or between 1 and the "
        f"device count {len(devices)}."
    )
  if jax.process_count() > 1:
    raise ValueError(
        f"config.mesh.num_devices={num_devices}: a run over {jax.process_count()} processes "
        f"must use all {len(devices)} devices (set config.mesh.num_devices=-1)."
    )
  return devices[:num_devices]


def make_mesh(mesh_config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  devices = mesh_devices(mesh_config)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(
      shape, DATA_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(DATA_AXES),
      devices=devices,
  )


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divisible(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  num_shards = math.prod(mesh.shape[a] for a in DATA_AXES)
  if global_batch_size % num_shards:
    raise ValueError(
        f"config.batch_size={global_batch_size} is not divisible by the {num_shards} "
        f"devices of the mesh {dict(mesh.shape)}."
    )
  if global_batch_size % jax.process_count():
    raise ValueError(
        f"config.batch_size={global_batch_size} is not divisible by the "
        f"{jax.process_count()} processes."
    )


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  """Splits the largest dimension divisible by `fsdp`; small arrays stay replicated."""
  if fsdp == 1 or math.prod(shape) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(
    abstract_state: Any, mesh: jax.sharding.Mesh, mesh_config: ml_collections.ConfigDict
) -> Any:
  """NamedShardings for a pytree of ShapeDtypeStructs (params, optimizer state, step)."""
  fsdp = mesh.shape["fsdp"]

  def leaf_sharding(leaf):
    return NamedSharding(mesh, _fsdp_spec(tuple(leaf.shape), fsdp, mesh_config.fsdp_min_size))

  return jax.tree.map(leaf_sharding, abstract_state)


def with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """Attaches shardings to ShapeDtypeStructs (orbax restores into these)."""
  return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      abstract_tree,
      shardings,
  )


def host_to_global(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict:
  """Per-process batch (this host's slice) -> global jax.Arrays split over the mesh."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
  )
