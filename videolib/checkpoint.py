"""Orbax checkpointing of the sharded train state, the data-iterator position and the config.

Each checkpoint step directory holds three items:
- `state`: `{'step', 'params', 'opt_state', ...}` as sharded `jax.Array`s (all processes
  write their shards);
- `data`: the train iterator's position (JSON);
- `config`: the full run config (JSON), used to refuse resuming or initialising from a
  checkpoint of a different model.

The run store: a run's workdir keeps its checkpoints in `<workdir>/checkpoints/<step>/`
(`checkpoint_dir`). Everything that reads a run goes through this module:
`Checkpointer.restore_latest` (resume), `read_run_config` and `read_run_params` (another
run's newest config or parameters, on any topology), `load_params` (`config.init_from`),
and every refusal of a run written with a different config is `refuse_if_different`'s.

Restores go into the *target* sharding (the abstract state carries it), so a checkpoint
written on N devices restores onto M devices. A latest checkpoint that cannot be read
(truncated, corrupt) is reported and the previous one is used; the training run moves it
to `unreadable/`. Saves cut short by SIGKILL leave `<step>.orbax-checkpoint-tmp`, which
orbax never restores and the next training run removes.
"""

from collections.abc import Callable
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

_ITEMS = ("state", "data", "config")
# Separator of the flat parameter names in `.npz` files ("encoder/conv_0/kernel").
NPZ_KEY_SEPARATOR = "/"


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be used."""


CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
  """Where the run in `workdir` writes its checkpoints (created by `Checkpointer`)."""
  return os.path.join(workdir, CHECKPOINT_SUBDIR)


def _existing_checkpoint_dir(path: str, role: str) -> str:
  """The checkpoint directory of the run at `path` (its workdir or that directory)."""
  directory = os.path.abspath(path)  # orbax refuses relative paths.
  if os.path.isdir(checkpoint_dir(directory)):
    directory = checkpoint_dir(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(
        f"{role}={path!r}: no such directory. Pass the workdir of a training run.")
  return directory


def refuse_if_different(differences: Sequence[str], *, source: str, refusing: str,
                        remedy: str = "") -> None:
  """Raises the one 'written with a different config' error when `differences` is not empty.

  Args:
    differences: 'field: checkpoint -> current' lines (`config_differences`).
    source: the checkpoint, as the user should find it.
    refusing: what is refused, e.g. 'resume'.
    remedy: a sentence saying what to do instead.
  """
  if differences:
    raise CheckpointError(
        f"{source} was written with a different config; refusing to {refusing}. Differing "
        "fields (checkpoint -> this config):\n  " + "\n  ".join(differences)
        + (f"\n{remedy}" if remedy else ""))


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    flat = {}
    for key, value in tree.items():
      flat.update(_flatten(value, f"{prefix}{key}."))
    return flat
  return {prefix[:-1]: tree}


# Config fields added after runs were written, with the value that reproduces how those
# runs behaved (see `register_added_config_fields`).
_ADDED_FIELD_DEFAULTS: dict[str, Any] = {}


def register_added_config_fields(defaults: dict[str, Any]) -> None:
  """Declares config fields added after runs existed, with the value those runs used.

  E.g. {'model.decoder_self_attention': False}, for `config_differences`.
  A config saved before a field existed lacks it; comparing it with a current config
  that holds the field at this value is not a difference, so such runs still resume and
  still serve as `init_from`.
  """
  _ADDED_FIELD_DEFAULTS.update(defaults)


# Config fields that choose how a model executes, never its parameters or its function
# (see `register_execution_only_config_fields`).
_EXECUTION_ONLY_FIELDS: set[str] = set()


def register_execution_only_config_fields(fields: Sequence[str]) -> None:
  """Declares fields such as 'model.remat' that `config_differences` never reports.

  They change speed and memory (loop unrolling, rematerialisation), not the parameters
  or what the model computes, so a run may resume, or serve as `init_from`, with other
  values of them.
  """
  _EXECUTION_ONLY_FIELDS.update(fields)


def config_differences(saved: dict[str, Any], current: dict[str, Any], section: str) -> list[str]:
  """Fields under `config.<section>` that differ, as 'field: saved -> current' lines.

  `section` is a dotted path: a whole section ('model') or one field ('readout.width').
  Fields registered as execution-only (`register_execution_only_config_fields`) are
  skipped.
  """
  within = lambda key: ((key == section or key.startswith(f"{section}."))
                        and key not in _EXECUTION_ONLY_FIELDS)
  saved_flat = {k: v for k, v in _flatten(saved).items() if within(k)}
  current_flat = {k: v for k, v in _flatten(current).items() if within(k)}
  for key, default in _ADDED_FIELD_DEFAULTS.items():
    if within(key) and key in current_flat:
      saved_flat.setdefault(key, default)
  lines = []
  for key in sorted(set(saved_flat) | set(current_flat)):
    old, new = saved_flat.get(key, "<absent>"), current_flat.get(key, "<absent>")
    if old != new:
      lines.append(f"{key}: {old!r} -> {new!r}")
  return lines


class Checkpointer:
  """Periodic async checkpoints of one run, keeping the newest `max_to_keep`."""

  def __init__(self, directory: str, *, max_to_keep: int, async_save: bool = True,
               owner: bool = False):
    """Opens (and creates) `directory`.

    Args:
      directory: the run's checkpoint directory.
      max_to_keep: newest checkpoints kept; older ones are deleted after each save.
      async_save: write in a background thread; `save` returns after the device-to-host
        copy.
      owner: True for the training run that writes `directory`: a save cut short (SIGKILL,
        lost host) leaves `<step>.orbax-checkpoint-tmp`, which is deleted on opening, and
        unreadable checkpoints are set aside by `restore_latest`. Readers (evaluators
        watching a live run) keep False so they never touch the writer's files.
    """
    self.directory = os.path.abspath(directory)
    self._owner = owner
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=owner,
        ),
        item_names=_ITEMS,
    )

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: Any, config: ml_collections.ConfigDict):
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config_to_json(config)),
        ),
        force=True,
    )

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()

  def _set_aside(self, step: int) -> str:
    """Moves unreadable checkpoint `step` to `unreadable/`, where orbax no longer sees it.

    Kept for inspection rather than deleted (the failure may be a transient read error);
    out of the way because the resumed run saves this step again, and orbax refuses to
    save over an existing step.
    """
    destination = epath.Path(self.directory) / "unreadable" / f"{step}-{int(time.time())}"
    if jax.process_index() == 0:
      destination.parent.mkdir(parents=True, exist_ok=True)
      (epath.Path(self.directory) / str(step)).rename(destination)
    multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")
    self._manager.reload()
    return str(destination)

  def _restore_step(self, step: int, abstract_state: Any, config: ml_collections.ConfigDict,
                    check_sections: Sequence[str]) -> tuple[Any, Any]:
    """Checks step's config against `config`, then restores its state and data position.

    The config comes first: a different model's state would fail on its shapes, which
    must not pass for damage.
    """
    saved_config = self._manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    current_config = config_to_json(config)
    refuse_if_different(
        [line for section in check_sections
         for line in config_differences(saved_config, current_config, section)],
        source=f"The checkpoint at {self.directory}/{step}", refusing="resume",
        remedy="Use a new --workdir, or restore the original config values.")
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def restore_latest(
      self, abstract_state: Any, config: ml_collections.ConfigDict, *,
      check_sections: Sequence[str] = ("model",)
  ) -> tuple[Any, Any] | None:
    """Restores the newest readable checkpoint into `abstract_state`'s shardings.

    Returns `(state, data_state)`, or None when the directory has no checkpoint. A
    checkpoint that differs in any of `check_sections` (dotted config paths, see
    `config_differences`) is refused with the list of differing fields. Unreadable
    checkpoints are skipped with an error in the log,
    newest first, so one corrupt save costs one checkpoint interval, not the run. Once an
    older one restores, the owner moves the skipped ones to `unreadable/` (see
    `__init__`); if none restores, nothing is moved.
    """
    failures = {}
    for step in reversed(self.all_steps()):
      try:
        restored = self._restore_step(step, abstract_state, config, check_sections)
      except CheckpointError:
        raise
      except Exception as error:  # orbax raises many types for damaged files.
        failures[step] = error
        logging.error("Checkpoint %s/%d is unreadable (%s); trying an older one.",
                      self.directory, step, error)
        continue
      if failures:
        logging.warning("Resumed from step %d after skipping unreadable checkpoints %s.",
                        step, sorted(failures))
      if failures and self._owner:
        for unreadable in failures:
          logging.error("Moved unreadable checkpoint %d to %s.", unreadable,
                        self._set_aside(unreadable))
      return restored
    if failures:
      raise CheckpointError(
          f"No readable checkpoint in {self.directory}:\n  " + "\n  ".join(
              f"step {step}: {type(error).__name__}: {error}"
              for step, error in failures.items())
      )
    return None


def read_run_config(path: str, *, role: str = "config.init_from") -> tuple[dict[str, Any], str]:
  """The config (JSON) saved with the newest checkpoint of a run, and that checkpoint's path.

  `path` is a run's workdir or its checkpoint directory; `role` names it in errors.
  """
  directory = _existing_checkpoint_dir(path, role)
  manager = ocp.CheckpointManager(directory, item_names=_ITEMS)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{role}={path!r}: no checkpoint in {directory}.")
  saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  manager.close()
  return saved.config, f"{directory}/{step}"


def read_run_params(path: str, *, role: str = "config.init_from"
                    ) -> tuple[Any, dict[str, Any], str]:
  """The parameters and config of the newest checkpoint of a run, whatever its topology.

  `path` is a run's workdir or its checkpoint directory; `role` names it in errors. The
  whole train state is restored onto this process's first device (its metadata gives the
  shapes), so a run written on any number of devices can be read on any machine; only
  the parameters are returned, with the saved config (JSON) and the checkpoint path.
  """
  directory = _existing_checkpoint_dir(path, role)
  manager = ocp.CheckpointManager(
      directory,
      item_names=_ITEMS,
      item_handlers=dict(state=ocp.StandardCheckpointHandler(),
                         data=ocp.JsonCheckpointHandler(),
                         config=ocp.JsonCheckpointHandler()),
  )
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{role}={path!r}: no checkpoint in {directory}.")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
      manager.item_metadata(step)["state"],
  )
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore()))
  manager.close()
  return restored.state["params"], restored.config, f"{directory}/{step}"


def load_params(
    path: str,
    target_params: Any,
    config: ml_collections.ConfigDict | None = None,
    *,
    prefixes: tuple[str, ...] = (),
    key_map: Callable[[str], str] | None = None,
) -> Any:
  """Loads only the parameters of another run's newest checkpoint (`config.init_from`).

  `path` is a run's workdir or its `checkpoints/` directory, or a `.npz` file of flat
  "a/b/c" parameter names (see `load_npz_params`; `key_map` renames its keys, and the
  `config.model` check is skipped: the file holds no config). The parameters are placed
  into the shardings of `target_params` (abstract or concrete arrays). Missing,
  unexpected or mis-shaped parameters are reported by name; nothing is loaded partially
  unless asked for:

  * `prefixes=()` loads every parameter. If `config` is given, a checkpoint whose
    `config.model` differs is refused with the differing fields.
  * `prefixes=('patch_embed', 'encoder')` loads only those top-level subtrees (e.g. a
    pretrained backbone into a classifier whose head the checkpoint lacks) and keeps
    `target_params` elsewhere, so `target_params` must then be concrete arrays. The
    `config.model` check is skipped (the two models differ by design); the names and
    shapes under the prefixes are still checked exactly.
  """
  if path.endswith(".npz"):
    loaded = read_npz_params(path, key_map)
    if prefixes:
      return _place_subtrees(loaded, target_params, tuple(prefixes), source=path)
    return place_params(loaded, target_params, source=path)
  loaded, saved_config, source = read_run_params(path)
  if prefixes:
    return _place_subtrees(loaded, target_params, tuple(prefixes), source=source)
  if config is not None:
    refuse_if_different(config_differences(saved_config, config_to_json(config), "model"),
                        source=f"config.init_from={path!r} ({source})",
                        refusing="initialise from it")
  return place_params(loaded, target_params, source=source)


def _place_subtrees(
    loaded: Any, target_params: Any, prefixes: tuple[str, ...], *, source: str
) -> Any:
  """`target_params` with its top-level subtrees named in `prefixes` taken from `loaded`."""
  absent = sorted({name for name in prefixes if name not in loaded} |
                  {name for name in prefixes if name not in target_params})
  if absent:
    raise CheckpointError(
        f"config.init_from_prefixes={prefixes}: {absent} not in both {source} "
        f"(has {sorted(loaded)}) and the model (has {sorted(target_params)})."
    )
  placed = place_params({name: loaded[name] for name in prefixes},
                        {name: target_params[name] for name in prefixes}, source=source)
  return {**target_params, **placed}


def place_params(loaded: Any, abstract_params: Any, *, source: str) -> Any:
  """Checks `loaded` against `abstract_params` by name and shape, then shards it."""
  flat_loaded = {jax.tree_util.keystr(k): v for k, v in
                 jax.tree_util.tree_flatten_with_path(loaded)[0]}
  flat_expected = {jax.tree_util.keystr(k): v for k, v in
                   jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
  missing = sorted(set(flat_expected) - set(flat_loaded))
  unexpected = sorted(set(flat_loaded) - set(flat_expected))
  misshaped = sorted(
      f"{name}: {np.shape(flat_loaded[name])} != {flat_expected[name].shape}"
      for name in set(flat_expected) & set(flat_loaded)
      if tuple(np.shape(flat_loaded[name])) != tuple(flat_expected[name].shape)
  )
  if missing or unexpected or misshaped:
    raise CheckpointError(
        f"Parameters from {source} do not match the model.\n"
        f"  missing: {missing}\n  unexpected: {unexpected}\n  wrong shape: {misshaped}"
    )
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)

  def to_global(path, leaf):
    # Every process holds the full value; each device takes its own slice (multi-host safe).
    value = np.asarray(flat_loaded[jax.tree_util.keystr(path)], leaf.dtype)
    return jax.make_array_from_callback(value.shape, leaf.sharding, lambda index: value[index])

  placed = [to_global(path, leaf) for path, leaf in leaves]
  return jax.tree_util.tree_unflatten(treedef, placed)


def flatten_params(params: Any) -> dict[str, np.ndarray]:
  """Nested dict of arrays -> `{"a/b/c": array}` as full host numpy copies.

  Arrays sharded across processes are all-gathered, so every process must call this.
  """
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [str(entry.key) for entry in path]
    invalid = [name for name in names if not name or NPZ_KEY_SEPARATOR in name]
    if invalid:
      raise ValueError(
          f"Parameter {jax.tree_util.keystr(path)}: names must be non-empty and free of "
          f"{NPZ_KEY_SEPARATOR!r} to be stored as flat keys; got {invalid}.")
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      leaf = multihost_utils.process_allgather(leaf, tiled=True)
    flat[NPZ_KEY_SEPARATOR.join(names)] = np.asarray(jax.device_get(leaf))
  return flat


def unflatten_params(flat: dict[str, Any]) -> dict[str, Any]:
  """`{"a/b/c": array}` -> nested dict; a name that is both an array and a prefix is refused."""
  nested: dict[str, Any] = {}
  for key in sorted(flat):
    *parents, leaf_name = key.split(NPZ_KEY_SEPARATOR)
    node = nested
    for depth, name in enumerate(parents):
      node = node.setdefault(name, {})
      if not isinstance(node, dict):
        raise CheckpointError(
            f"Flat key {key!r} lies under {NPZ_KEY_SEPARATOR.join(parents[:depth + 1])!r}, "
            "which is itself an array.")
    node[leaf_name] = flat[key]
  return nested


def save_npz_params(path: str, params: Any) -> None:
  """Writes `params` (nested dict of arrays) to `path` as `.npz` with flat "a/b/c" keys.

  Every process must call it (arrays sharded across processes are all-gathered); process
  0 writes the file.
  """
  flat = flatten_params(params)
  if jax.process_index() == 0:
    with open(path, "wb") as f:
      np.savez(f, **flat)


def read_npz_params(path: str, key_map: Callable[[str], str] | None = None) -> dict[str, Any]:
  """Reads an `.npz` of flat "a/b/c" keys into a nested dict of numpy arrays.

  Args:
    path: the `.npz` file.
    key_map: renames each stored key (e.g. a released file's names to this project's)
      before nesting; two keys renamed to the same name are refused.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path!r}: no such .npz file.")
  with np.load(path, allow_pickle=False) as stored:
    flat = {}
    for stored_key in stored.files:
      key = key_map(stored_key) if key_map else stored_key
      if key in flat:
        raise CheckpointError(f"{path}: two stored keys map to {key!r} (one is {stored_key!r}).")
      flat[key] = stored[stored_key]
  return unflatten_params(flat)


def load_npz_params(
    path: str, abstract_params: Any, key_map: Callable[[str], str] | None = None
) -> Any:
  """Loads an `.npz` of flat "a/b/c" keys into the names, shapes and shardings of a model.

  Strict: missing, unexpected and mis-shaped parameters are reported by name (see
  `place_params`); there is no partial load.

  Args:
    path: the `.npz` file (e.g. written by `save_npz_params`).
    abstract_params: the target tree; its leaves (concrete arrays or
      `jax.ShapeDtypeStruct`s with a sharding) give the shapes, dtypes and shardings.
    key_map: optional renaming of the stored keys, see `read_npz_params`.

  Returns:
    The parameters as global `jax.Array`s in `abstract_params`' structure.
  """
  return place_params(read_npz_params(path, key_map), abstract_params, source=path)
