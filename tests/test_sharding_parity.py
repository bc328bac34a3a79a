"""One tiny MooG run, three topologies: 1 device, data x 8, data 2 x fsdp 4 must agree.

All runs go through `train.train_and_evaluate` (the trainer path) inside this process with
its 8 simulated CPU devices; `config.mesh.num_devices` picks the first n of them. A
checkpoint written on 8 devices must resume on 1 and on 4 and end where the 8-device run
ended. `conftest.py`'s persistent compilation cache lets a run on a mesh already compiled
for (the 1-device resume) skip XLA compilation.
"""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest
import tiny_configs

from moog import task as moog_task
from videolib import checkpoint
from videolib import optim
from videolib import sharding
from videolib import train
from videolib.data import pipeline

NUM_TRAIN_STEPS = 4
# Float32 sums split over devices are added in a different order: agreement is to
# rounding, not bitwise.
LOSS_RTOL = 1e-5
PARAM_ATOL = 2e-5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(data_dir: str, *, num_devices=-1, data=-1, fsdp=1) -> ml_collections.ConfigDict:
  """The tiny MooG on 16x16 synthetic video, 4 steps, a checkpoint every 2."""
  return tiny_configs.tiny_moog_config(data_dir, **{
      "num_train_steps": NUM_TRAIN_STEPS, "log_every_steps": 1,
      "eval_every_steps": NUM_TRAIN_STEPS, "checkpoint_every_steps": 2,
      "num_summary_videos": 1, "optimizer.warmup_steps": 1, "optimizer.peak_lr": 1e-3,
      "mesh.num_devices": num_devices, "mesh.data": data, "mesh.fsdp": fsdp,
      # The tiny model's largest kernel has 4,608 elements: shard everything above 1,024.
      "mesh.fsdp_min_size": 1024})


def train_losses(workdir: str) -> list[float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return [r["loss"] for r in sorted(
      (r for r in records if r["split"] == "train"), key=lambda r: r["step"])]


def final_state(workdir: str, config: ml_collections.ConfigDict) -> dict:
  """The newest checkpoint's state as numpy arrays (restored onto one device)."""
  task = moog_task.MooGTask(config)
  spec = pipeline.batch_spec(config.data, config.batch_size)
  tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps)
  _, abstract = train.abstract_train_state(task, tx, spec, jax.random.key(0))
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda _: one_device, abstract)
  checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=3)
  state, _ = checkpointer.restore_latest(sharding.with_shardings(abstract, target), config)
  checkpointer.close()
  return jax.tree.map(np.asarray, state)


def assert_trees_close(actual, expected, atol):
  flat_actual = jax.tree_util.tree_leaves_with_path(actual)
  flat_expected = jax.tree.leaves(expected)
  assert len(flat_actual) == len(flat_expected)
  worst = max((float(np.max(np.abs(a - e))), jax.tree_util.keystr(path))
              for (path, a), e in zip(flat_actual, flat_expected))
  assert worst[0] <= atol, f"largest difference {worst[0]:.3g} at {worst[1]}"


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """Workdirs and configs of the three topologies, trained once for the module."""
  topologies = {
      "one_device": dict(num_devices=1),
      "data_8": dict(),
      "data_2_fsdp_4": dict(data=2, fsdp=4),
  }
  results = {}
  for name, mesh in topologies.items():
    config = tiny_config(data_dir, **mesh)
    workdir = str(tmp_path_factory.mktemp(name))
    train.train_and_evaluate(config, workdir, moog_task.MooGTask(config))
    results[name] = (workdir, config)
  return results


@pytest.mark.slow  # Three trainer runs, each compiling train, eval and summaries.
def test_one_device_data_parallel_and_fsdp_give_the_same_losses_and_parameters(runs):
  reference_dir, reference_config = runs["one_device"]
  reference_losses = train_losses(reference_dir)
  reference_state = final_state(reference_dir, reference_config)
  assert len(reference_losses) == NUM_TRAIN_STEPS
  # Training moved the parameters: agreement below is not agreement of the init.
  assert reference_losses[-1] < reference_losses[0]
  for name in ("data_8", "data_2_fsdp_4"):
    workdir, config = runs[name]
    np.testing.assert_allclose(train_losses(workdir), reference_losses, rtol=LOSS_RTOL,
                               err_msg=name)
    state = final_state(workdir, config)
    assert int(state["step"]) == NUM_TRAIN_STEPS
    assert_trees_close(state["params"], reference_state["params"], PARAM_ATOL)
    assert_trees_close(state["opt_state"], reference_state["opt_state"], PARAM_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("num_devices", [1, 4])
def test_checkpoint_from_8_devices_resumes_on_fewer_and_ends_where_8_did(
    runs, tmp_path, num_devices):
  source_dir, source_config = runs["data_8"]
  workdir = str(tmp_path / "resumed")
  shutil.copytree(source_dir, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(NUM_TRAIN_STEPS)))
  config = tiny_config(source_config.data.data_dir, num_devices=num_devices)

  train.train_and_evaluate(config, workdir, moog_task.MooGTask(config))

  resumed, uninterrupted = final_state(workdir, config), final_state(source_dir, source_config)
  assert int(resumed["step"]) == NUM_TRAIN_STEPS
  assert_trees_close(resumed["params"], uninterrupted["params"], PARAM_ATOL)


def test_fsdp_mesh_splits_parameters_and_optimizer_state_over_four_devices():
  config = tiny_config("unused", data=2, fsdp=4)
  mesh = sharding.make_mesh(config.mesh)
  task = moog_task.MooGTask(config)
  spec = {"video": jax.ShapeDtypeStruct((8, 4, 16, 16, 3), np.float32)}  # No data needed.
  tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps)
  init_state, abstract = train.abstract_train_state(task, tx, spec, jax.random.key(0))
  state_sharding = sharding.state_shardings(abstract, mesh, config.mesh)
  # Exactly as the trainer creates it: sharded at birth.
  state = jax.jit(init_state, out_shardings=state_sharding)(jax.random.key(0))

  kernel = state["params"]["decoder"]["transformer"]["block_0"]["mlp_in"]["kernel"]
  assert kernel.shape == (48, 64)
  assert kernel.sharding.spec == jax.P(None, "fsdp")
  assert {shard.data.shape for shard in kernel.addressable_shards} == {(48, 16)}
  adam_mu = state["opt_state"][1][0].mu["decoder"]["transformer"]["block_0"]["mlp_in"]["kernel"]
  assert {shard.data.shape for shard in adam_mu.addressable_shards} == {(48, 16)}
  leaves = jax.tree.leaves(state["params"])
  split = [leaf for leaf in leaves if "fsdp" in leaf.sharding.spec]
  assert all(leaf.size >= config.mesh.fsdp_min_size for leaf in split)
  assert sum(leaf.size for leaf in split) > 0.5 * sum(leaf.size for leaf in leaves)
  # Per device, the split parameters take a quarter of their full size.
  device_bytes = sum(leaf.addressable_shards[0].data.nbytes for leaf in split)
  assert device_bytes * 4 == sum(leaf.nbytes for leaf in split)


def test_num_devices_builds_a_smaller_mesh_and_names_a_bad_count():
  data_dir = "unused"
  config = tiny_config(data_dir, num_devices=4, data=-1, fsdp=2)
  mesh = sharding.make_mesh(config.mesh)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2}
  assert list(mesh.devices.flat) == jax.devices()[:4]
  with pytest.raises(ValueError, match=r"config.mesh.num_devices=9 must be -1 \(all\) or "
                                       r"between 1 and the device count 8"):
    sharding.make_mesh(tiny_config(data_dir, num_devices=9).mesh)
  with pytest.raises(ValueError, match="config.mesh data=4 x fsdp=2 = 8 devices, but there "
                                       "are 4"):
    sharding.make_mesh(tiny_config(data_dir, num_devices=4, data=4, fsdp=2).mesh)
  with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 4 devices"):
    sharding.check_batch_divisible(6, mesh)
