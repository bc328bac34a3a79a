"""Shared trainer machinery: mesh, sharding, optimizer schedule, checkpoints, writers."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import moog.model  # noqa: F401  Registers MooG's execution-only config fields.
from videolib import checkpoint
from videolib import cost
from videolib import optim
from videolib import sharding
from videolib import writers


def _mesh_config(data=-1, fsdp=1):
  config = sharding.default_mesh_config()
  config.data, config.fsdp = data, fsdp
  return config


def test_mesh_uses_all_eight_simulated_devices():
  mesh = sharding.make_mesh(_mesh_config())
  assert jax.device_count() == 8
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1}
  mesh = sharding.make_mesh(_mesh_config(fsdp=4))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}


@pytest.mark.parametrize("data,fsdp,message", [
    (3, 1, "3 x fsdp=1 = 3 devices, but there are 8"),
    (-1, 3, "fsdp=3 does not divide the device count 8"),
])
def test_mesh_that_does_not_cover_the_devices_names_the_numbers(data, fsdp, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(_mesh_config(data, fsdp))


def test_batch_not_divisible_by_devices_names_the_numbers():
  mesh = sharding.make_mesh(_mesh_config())
  with pytest.raises(ValueError, match="batch_size=12 is not divisible by the 8 devices"):
    sharding.check_batch_divisible(12, mesh)


def test_fsdp_splits_the_largest_divisible_dimension_and_replicates_small_arrays():
  mesh = sharding.make_mesh(_mesh_config(fsdp=4))
  abstract = {
      "big": jax.ShapeDtypeStruct((6, 4096), jnp.float32),
      "odd": jax.ShapeDtypeStruct((4097, 5), jnp.float32),
      "small": jax.ShapeDtypeStruct((512,), jnp.float32),
  }
  shardings = sharding.state_shardings(abstract, mesh, _mesh_config(fsdp=4))
  assert shardings["big"].spec == P(None, "fsdp")
  assert shardings["odd"].spec == P()
  assert shardings["small"].spec == P()


def test_host_batch_becomes_a_global_array_split_over_devices():
  mesh = sharding.make_mesh(_mesh_config())
  local = {"video": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}
  global_batch = sharding.host_to_global(local, mesh)
  assert global_batch["video"].shape == (16, 3)
  assert len(global_batch["video"].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(global_batch["video"]), local["video"])


def test_schedule_warms_up_linearly_then_decays_to_the_end_value():
  config = optim.default_optimizer_config()
  config.warmup_steps = 10
  schedule = optim.make_schedule(config, num_train_steps=100)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5)), 0.5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(10)), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(100)), 1e-7, rtol=1e-4)
  assert float(schedule(55)) < 1e-4


def test_weight_decay_applies_to_every_parameter_including_biases():
  config = optim.default_optimizer_config()
  config.warmup_steps = 0
  tx, schedule = optim.make_optimizer(config, 10)
  params = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), -2.0)}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  lr = float(schedule(0))
  for name in params:
    np.testing.assert_allclose(
        np.asarray(updates[name]), -lr * config.weight_decay * np.asarray(params[name]),
        rtol=1e-6)


def _state(mesh, spec):
  params = {"w": jnp.arange(64.0).reshape(8, 8), "b": jnp.arange(8.0)}
  sharded = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec)), params)
  return {"step": jnp.array(7), "params": sharded}


def _config(width=8):
  return ml_collections.ConfigDict({"model": {"width": width}, "seed": 0})


def _abstract(state, mesh, spec):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=NamedSharding(mesh, spec if x.ndim else P())),
      state,
  )


@pytest.mark.parametrize("restore_devices", [1, 4])
def test_checkpoint_saved_on_8_devices_restores_on_fewer(tmp_path, restore_devices):
  mesh8 = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  state = _state(mesh8, P("data"))
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
  ckpt.save(7, state, {"next_index": 3}, _config())
  ckpt.wait()
  small = jax.sharding.Mesh(np.array(jax.devices()[:restore_devices]), ("data",))
  restored, data_state = ckpt.restore_latest(_abstract(state, small, P("data")), _config())
  assert data_state == {"next_index": 3}
  assert restored["params"]["w"].sharding.mesh.devices.size == restore_devices
  np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), np.arange(64.0).reshape(8, 8))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  state = _state(mesh, P())
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=3)
  ckpt.save(1, state, {"i": 1}, _config())
  ckpt.wait()
  state["step"] = jnp.array(2)
  ckpt.save(2, state, {"i": 2}, _config())
  ckpt.wait()
  for root, _, files in os.walk(tmp_path / "2" / "state"):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(3)
  restored, data_state = ckpt.restore_latest(_abstract(state, mesh, P()), _config())
  assert data_state == {"i": 1}
  assert int(restored["step"]) == 7


def test_checkpoint_of_a_different_model_config_is_refused_naming_the_field(tmp_path):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  state = _state(mesh, P())
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=1)
  ckpt.save(1, state, {}, _config(width=8))
  ckpt.wait()
  with pytest.raises(checkpoint.CheckpointError, match=r"model\.width: 8 -> 16"):
    ckpt.restore_latest(_abstract(state, mesh, P()), _config(width=16))


def test_params_only_load_reports_missing_unexpected_and_misshaped_keys(tmp_path):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  state = _state(mesh, P())
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=1)
  ckpt.save(1, state, {}, _config())
  ckpt.wait()
  good = _abstract(state, mesh, P())["params"]
  loaded = checkpoint.load_params(str(tmp_path), good, _config())
  np.testing.assert_array_equal(np.asarray(loaded["b"]), np.arange(8.0))
  wrong = {"w": jax.ShapeDtypeStruct((8, 9), jnp.float32, sharding=NamedSharding(mesh, P())),
           "c": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=NamedSharding(mesh, P()))}
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.load_params(str(tmp_path), wrong)
  message = str(error.value)
  assert "missing: [\"['c']\"]" in message
  assert "unexpected: [\"['b']\"]" in message
  assert "(8, 8) != (8, 9)" in message


def test_writer_writes_jsonl_tensorboard_and_gif(tmp_path):
  writer = writers.MetricWriter(str(tmp_path), enabled=True)
  writer.write_scalars(3, {"loss": np.float32(0.5), "psnr": 20.0}, split="validation")
  video = np.zeros((2, 4, 8, 8, 3), np.uint8)
  video[1, :, 0, 0] = 255  # Top-left pixel of the second video.
  video[0, :, 7, 7] = np.arange(4)[:, None] * 60  # Frames differ (Pillow merges repeats).
  writer.write_videos(3, {"prediction": video})
  writer.close()
  record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
  assert record == {"step": 3, "split": "validation", "loss": 0.5, "psnr": 20.0}
  assert os.listdir(tmp_path / "tensorboard")
  # Videos side by side, each 8x8 frame upscaled 16x to the 128-pixel minimum.
  with Image.open(tmp_path / "summaries" / "prediction_00000003.gif") as gif:
    assert (gif.size, gif.n_frames) == ((256, 128), 4)
    frame = np.asarray(gif.convert("RGB"))
  assert frame[:16, 128:144].min() == 255 and frame[16:, 128:].max() == 0
  assert frame[:112, :128].max() == 0  # Video 0's varying pixel is its last 16 rows.


def _tensorboard_scalars(logdir, tag):
  """(step, value) pairs as TensorBoard itself loads them (purging included)."""
  accumulator = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.SCALARS: 0})
  accumulator.Reload()
  return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_tensorboard_shows_each_step_once_after_a_resume(tmp_path):
  first = writers.MetricWriter(str(tmp_path), purge_step=0, enabled=True)
  for step in range(1, 21):
    first.write_scalars(step, {"loss": float(step)})
  first.close()
  # Resumed from the step-10 checkpoint: steps 11.. are logged again, with new values.
  resumed = writers.MetricWriter(str(tmp_path), purge_step=11, enabled=True)
  for step in range(11, 26):
    resumed.write_scalars(step, {"loss": 100.0 + step})
  resumed.close()
  expected = [(s, float(s)) for s in range(1, 11)] + [(s, 100.0 + s) for s in range(11, 26)]
  assert _tensorboard_scalars(tmp_path / "tensorboard", "train/loss") == expected


def test_params_of_an_8_device_run_load_onto_one_device(tmp_path):
  mesh8 = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  state = _state(mesh8, P("data"))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=1)
  ckpt.save(1, state, {}, _config())
  ckpt.wait()
  one_device = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  target = _abstract(state, one_device, P())["params"]
  loaded = checkpoint.load_params(str(tmp_path), target, _config())
  assert loaded["w"].sharding.mesh.devices.size == 1
  np.testing.assert_array_equal(np.asarray(loaded["w"]), np.arange(64.0).reshape(8, 8))


def test_params_load_from_a_workdir_given_relative_to_the_current_directory(
    tmp_path, monkeypatch):
  # `--config.init_from=runs/pretrain` and `visualize --workdir=runs/...` (orbax wants
  # absolute paths).
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  state = _state(mesh, P())
  ckpt = checkpoint.Checkpointer(str(tmp_path / "runs" / "pretrain" / "checkpoints"),
                                 max_to_keep=1)
  ckpt.save(1, state, {}, _config())
  ckpt.wait()
  monkeypatch.chdir(tmp_path)
  params, _, source = checkpoint.read_run_params("runs/pretrain")
  assert source == str(tmp_path / "runs" / "pretrain" / "checkpoints" / "1")
  np.testing.assert_array_equal(np.asarray(params["w"]), np.arange(64.0).reshape(8, 8))


def test_a_field_added_later_is_no_difference_at_the_value_old_runs_used():
  checkpoint.register_added_config_fields({"model.added_later_for_test": 1})
  saved = {"model": {"num_tokens": 64}}
  assert checkpoint.config_differences(
      saved, {"model": {"num_tokens": 64, "added_later_for_test": 1}}, "model") == []
  assert checkpoint.config_differences(
      saved, {"model": {"num_tokens": 64, "added_later_for_test": 8}}, "model") == [
          "model.added_later_for_test: 1 -> 8"]
  assert checkpoint.config_differences(
      saved, {"model": {"num_tokens": 32, "added_later_for_test": 1}}, "model") == [
          "model.num_tokens: 64 -> 32"]


def test_execution_only_fields_are_no_difference_but_the_model_still_is():
  # Registered by moog.model (imported above): unrolling and remat never block a resume.
  saved = {"model": {"num_tokens": 64, "scan_unroll": 1, "remat": False}}
  assert checkpoint.config_differences(
      saved, {"model": {"num_tokens": 64, "scan_unroll": 8, "remat": True}}, "model") == []
  assert checkpoint.config_differences(
      saved, {"model": {"num_tokens": 32, "scan_unroll": 8, "remat": True}}, "model") == [
          "model.num_tokens: 64 -> 32"]
  # A run written before `scan_unroll` existed compares equal at any unrolling too.
  assert checkpoint.config_differences(
      {"model": {"num_tokens": 64}}, {"model": {"num_tokens": 64, "scan_unroll": 8}},
      "model") == []


def test_config_differences_of_one_field_ignore_the_rest_of_its_section():
  saved = {"readout": {"width": 64, "eval_slice_frames": 0}, "model": {"num_tokens": 64}}
  current = {"readout": {"width": 32, "eval_slice_frames": 8}, "model": {"num_tokens": 8}}
  assert checkpoint.config_differences(saved, current, "readout.width") == [
      "readout.width: 64 -> 32"]
  assert checkpoint.config_differences(saved, current, "readout.eval_slice_frames") == [
      "readout.eval_slice_frames: 0 -> 8"]
  # A prefix is a path, not a string prefix: 'readout.w' is not 'readout.width'.
  assert checkpoint.config_differences(saved, current, "readout.w") == []
  assert checkpoint.config_differences(saved, current, "model") == ["model.num_tokens: 64 -> 8"]


def test_xla_flops_counts_a_matmul_exactly_on_sharded_and_abstract_arguments():
  mesh = jax.make_mesh((8,), ("data",))
  a = jax.device_put(jnp.ones((64, 32)), NamedSharding(mesh, P("data")))
  b = jax.ShapeDtypeStruct((32, 16), jnp.float32)
  assert cost.xla_flops(jnp.matmul, a, b) == 2 * 64 * 32 * 16


def test_xla_flops_counts_a_loop_body_once_so_time_loops_are_counted_unrolled():
  def four_matmuls(x, w, unroll):
    return jax.lax.scan(lambda carry, _: (carry @ w, None), x, None, length=4,
                        unroll=unroll)[0]

  x, w = jnp.ones((8, 16)), jnp.ones((16, 16))
  one_matmul = 2 * 8 * 16 * 16
  rolled = cost.xla_flops(lambda x, w: four_matmuls(x, w, 1), x, w)
  unrolled = cost.xla_flops(lambda x, w: four_matmuls(x, w, True), x, w)
  assert rolled == pytest.approx(one_matmul, abs=2)  # + the loop counter's add and compare.
  assert unrolled == 4 * one_matmul


def test_evaluation_pools_sums_and_counts_with_metrics_finalize(monkeypatch):
  """The trainer's evaluation pools over batches as `metrics.finalize` does: sum / count,
  NaN for a metric nothing was scoreable for (the notebook gives the same numbers)."""
  from videolib import train  # pylint: disable=import-outside-toplevel
  from videolib.data import pipeline  # pylint: disable=import-outside-toplevel
  batches = [{"x": np.full((8,), 1.0, np.float32), "_mask": np.ones(8, bool)},
             {"x": np.full((8,), 4.0, np.float32), "_mask": np.arange(8) < 2}]
  monkeypatch.setattr(pipeline, "make_eval_iterator", lambda *args, **kwargs: iter(batches))

  def eval_fn(params, batch, rng):
    del params, rng
    mask = batch["_mask"].astype(jnp.float32)
    return {"x": (jnp.sum(batch["x"] * mask), jnp.sum(mask)),
            "squared_mse": (jnp.sum(batch["x"] ** 2 * mask), jnp.sum(mask)),
            "unscoreable": (jnp.zeros(()), jnp.zeros(()))}

  config = ml_collections.ConfigDict(dict(seed=0, eval_batch_size=8, data={}))
  mesh = sharding.make_mesh(_mesh_config())
  values, _ = train._evaluate(None, config, mesh, eval_fn, task=train.Task())  # pylint: disable=protected-access
  assert values["x"] == pytest.approx((8 * 1.0 + 2 * 4.0) / 10)
  assert values["squared_rmse"] == pytest.approx(np.sqrt((8 * 1.0 + 2 * 16.0) / 10))
  assert np.isnan(values["unscoreable"])


def test_named_rng_streams_are_distinct_and_init_keeps_the_root_key():
  from videolib import train  # pylint: disable=import-outside-toplevel
  keys = {name: jax.random.key_data(train.rng_stream(3, name))
          for name in ("init", "train", "eval", "summaries")}
  np.testing.assert_array_equal(keys["init"], jax.random.key_data(jax.random.key(3)))
  values = [tuple(np.asarray(k).ravel()) for k in keys.values()]
  assert len(set(values)) == 4
  with pytest.raises(KeyError):
    train.rng_stream(3, "dropout")
