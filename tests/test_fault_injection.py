"""Fault injection through the real command line (`python -m moog.main`).

Every test breaks a real run: training subprocesses killed with signals, checkpoints
damaged on disk, a diverging optimizer, bad records written into the local TFDS dataset.
Runs are tiny MooG on 16x16 frames (see `fault_injection_utils.py`), compared bitwise with
one uninterrupted reference run of the same command. The long mode
(`pytest -m slow tests/test_fault_injection.py`) kills one run at 24 random moments and
prints the figures recorded in `docs/reliability.md`.
"""

import json
import os
import random
import shutil
import signal
import time

import numpy as np
import pytest

import fault_injection_utils as fi
from moog import task as moog_task
from videolib import train

_STEPS = 16
_INTERVAL = 4  # config.checkpoint_every_steps of the test config.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  fi.prepare_dataset(path)
  return path


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """Workdir of the uninterrupted run every other run is compared with."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  run = fi.run_to_end(workdir, data_dir, f"--config.num_train_steps={_STEPS}")
  assert run.process.returncode == 0, run.log()[-3000:]
  assert sorted(fi.compared(workdir)) == list(range(1, _STEPS + 1))
  return workdir


# ---- Signals and exact resume ----------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(data_dir, reference, tmp_path_factory):
  """One workdir, trained by three processes in turn, each ended differently.

  1. SIGKILL while the async save of step 8 is being written;
  2. the same command again, SIGTERM after it passed the killed step (checkpoint, exit);
  3. again, to the end.

  Returns what each process did, for the tests below.
  """
  workdir = str(tmp_path_factory.mktemp("interrupted") / "run")
  args = (workdir, data_dir, f"--config.num_train_steps={_STEPS}")
  save_in_flight = os.path.join(workdir, "checkpoints", f"{2 * _INTERVAL}.orbax-checkpoint-tmp")
  seen = {}

  run = fi.Run(*args)
  run.wait_for_path(save_in_flight)
  seen["sigkill_exit"] = fi.kill(run, signal.SIGKILL)
  seen["sigkill_left_tmp_dir"] = os.path.exists(save_in_flight)
  seen["sigkill_last_logged"] = fi.last_train_step(workdir)
  seen["sigkill_checkpoints"] = fi.checkpoint_steps(workdir)

  run = fi.Run(*args)
  run.wait_for_step(seen["sigkill_last_logged"] + 1)
  seen["sigterm_exit"] = fi.kill(run, signal.SIGTERM)
  seen["tmp_dir_after_restart"] = os.path.exists(save_in_flight)
  seen["sigterm_log"] = run.log()
  seen["sigterm_last_logged"] = fi.last_train_step(workdir)
  seen["sigterm_checkpoints"] = fi.checkpoint_steps(workdir)
  seen["preempted_records"] = fi.records(workdir, "preempted")

  run = fi.Run(*args)
  seen["final_exit"] = run.wait()
  seen["final_log"] = run.log()
  seen["workdir"] = workdir
  return seen


def test_sigkill_during_a_save_falls_back_to_the_previous_complete_checkpoint(interrupted):
  """Loses one interval plus the steps run while the cut save was written (async)."""
  assert interrupted["sigkill_exit"] == -signal.SIGKILL
  assert interrupted["sigkill_left_tmp_dir"]
  assert interrupted["sigkill_checkpoints"] == [_INTERVAL]  # Step 8 never completed.
  assert 2 * _INTERVAL <= interrupted["sigkill_last_logged"] <= 3 * _INTERVAL
  assert not interrupted["tmp_dir_after_restart"]  # The restarted run removed it.


def test_sigterm_saves_the_current_step_and_exits_zero(interrupted):
  assert interrupted["sigterm_exit"] == 0, interrupted["sigterm_log"][-3000:]
  stopped_at = interrupted["sigterm_last_logged"]
  assert stopped_at > interrupted["sigkill_last_logged"]
  assert interrupted["sigterm_checkpoints"][-1] == stopped_at
  assert [(r["step"], r["signal"]) for r in interrupted["preempted_records"]] == [
      (stopped_at, signal.SIGTERM)]
  assert f"Stopped at step {stopped_at} after signal 15" in interrupted["sigterm_log"]


def test_preemption_watch_leaves_the_second_signal_to_the_os():
  """After the first signal the default action is back: the kernel ends the process even
  while Python waits in XLA or in a checkpoint save."""
  previous = signal.getsignal(signal.SIGTERM)
  with train._PreemptionWatch() as watch:  # pylint: disable=protected-access
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not watch.requested and time.monotonic() < deadline:
      time.sleep(0.001)
    assert (watch.requested, watch.signal_number) == (True, signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
  assert signal.getsignal(signal.SIGTERM) == previous


@pytest.mark.slow
def test_second_signal_exits_at_once_and_the_run_still_resumes_bitwise(
    reference, data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  args = (workdir, data_dir, f"--config.num_train_steps={_STEPS}")
  run = fi.Run(*args)
  run.wait_for_step(7)
  run.signal(signal.SIGINT)
  deadline = time.monotonic() + 60
  while "Signal 2: saving a checkpoint" not in run.log() and time.monotonic() < deadline:
    time.sleep(0.01)
  second_signal_time = time.monotonic()
  run.signal(signal.SIGINT)
  assert run.wait() == -signal.SIGINT
  assert time.monotonic() - second_signal_time < 2.0
  run = fi.run_to_end(*args)
  assert run.process.returncode == 0, run.log()[-3000:]
  assert fi.compared(workdir) == fi.compared(reference)


def test_resumed_losses_equal_the_uninterrupted_run_bitwise(interrupted, reference):
  assert interrupted["final_exit"] == 0, interrupted["final_log"][-3000:]
  resumed = fi.compared(interrupted["workdir"])  # Also fails on a step logged twice.
  assert resumed == fi.compared(reference)
  assert len(resumed) == _STEPS
  # The preemption checkpoint is kept like any other; nothing half-written remains.
  assert fi.checkpoint_steps(interrupted["workdir"]) == sorted(
      {interrupted["sigterm_last_logged"], _STEPS - _INTERVAL, _STEPS})[-3:]
  assert not [name for name in os.listdir(os.path.join(interrupted["workdir"], "checkpoints"))
              if "tmp" in name]


# ---- Checkpoint faults -----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", pytest.param("noise", marks=pytest.mark.slow)])
def test_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(
    damage, reference, data_dir, tmp_path):
  workdir = fi.copy_workdir(reference, str(tmp_path / "run"))
  latest = os.path.join(workdir, "checkpoints", str(_STEPS))
  if damage == "truncate":
    assert fi.truncate_files(os.path.join(latest, "state")) > 0
  else:
    assert fi.overwrite_with_noise(os.path.join(latest, "state")) > 0
  run = fi.run_to_end(workdir, data_dir, f"--config.num_train_steps={_STEPS}")
  assert run.process.returncode == 0, run.log()[-3000:]
  assert f"Checkpoint {workdir}/checkpoints/{_STEPS} is unreadable" in run.log()
  assert os.listdir(os.path.join(workdir, "checkpoints", "unreadable"))  # Kept, set aside.
  # Steps after the previous checkpoint were trained again, to the same numbers.
  assert fi.compared(workdir) == fi.compared(reference)
  assert fi.checkpoint_steps(workdir)[-1] == _STEPS


def test_checkpoint_of_a_different_model_is_refused_listing_the_fields(
    reference, data_dir, tmp_path):
  workdir = fi.copy_workdir(reference, str(tmp_path / "run"))
  run = fi.run_to_end(workdir, data_dir, f"--config.num_train_steps={_STEPS}",
                      "--config.model.token_dim=16", "--config.model.num_tokens=4")
  assert run.process.returncode != 0
  log = run.log()
  assert "CheckpointError" in log and "refusing to resume" in log
  assert "model.num_tokens: 8 -> 4" in log
  assert "model.token_dim: 32 -> 16" in log
  # Refused, not mistaken for damage: every checkpoint is still where it was.
  assert os.listdir(os.path.join(workdir, "checkpoints")) == os.listdir(
      os.path.join(reference, "checkpoints"))


def test_unwritable_workdir_fails_before_any_work(data_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")  # Root ignores permission bits; a path through a file fails for all.
  config = fi.get_config(data_dir)
  started = time.monotonic()
  with pytest.raises(OSError, match="is not writable"):
    train.train_and_evaluate(config, str(blocker / "workdir"), moog_task.MooGTask(config))
  assert time.monotonic() - started < 5.0


def test_disk_too_small_for_two_checkpoints_fails_at_start_up(tmp_path):
  free = shutil.disk_usage(tmp_path).free
  state = {"big": _Shape((free // 4 + 1,), np.float32)}
  with pytest.raises(OSError, match="two checkpoints of this train state need"):
    train.check_checkpoint_space(str(tmp_path), state)
  train.check_checkpoint_space(str(tmp_path), {"small": _Shape((1024,), np.float32)})


class _Shape:
  """A leaf with a shape and a dtype, like `jax.ShapeDtypeStruct`, without jax."""

  def __init__(self, shape, dtype):
    self.shape, self.dtype = shape, np.dtype(dtype)


# ---- Numerical faults ------------------------------------------------------------------------


def test_diverging_run_stops_naming_the_step_metrics_and_last_good_checkpoint(
    reference, data_dir, tmp_path):
  """An absurd learning rate makes the loss non-finite; the last good checkpoint stays."""
  workdir = fi.copy_workdir(reference, str(tmp_path / "run"))
  checkpoints = os.path.join(workdir, "checkpoints")
  before = {step: _tree_digest(os.path.join(checkpoints, str(step)))
            for step in fi.checkpoint_steps(workdir)}
  # Resume from step 16 and train on with lr 1e6: a new schedule, the same model config.
  run = fi.run_to_end(workdir, data_dir, "--config.num_train_steps=40",
                      "--config.optimizer.peak_lr=1e6", "--config.optimizer.warmup_steps=0")
  log = run.log()
  assert run.process.returncode != 0
  assert "NonFiniteLossError: Non-finite loss or gradient at step" in log
  bad_step = int(log.split("Non-finite loss or gradient at step ")[1].split()[0])
  assert bad_step > _STEPS
  assert f"Last good checkpoint: {checkpoints}/{_STEPS} (kept" in log
  (bad_record,) = [r for r in fi.records(workdir) if r["step"] == bad_step]
  assert not (np.isfinite(bad_record["loss"]) and np.isfinite(bad_record["grad_norm"]))
  assert f"Metrics of step {bad_step}: {{" in log
  # Nothing after the divergence was saved; the good checkpoints are bit-for-bit unchanged.
  assert {step: _tree_digest(os.path.join(checkpoints, str(step)))
          for step in fi.checkpoint_steps(workdir)} == before


def _tree_digest(directory: str) -> dict[str, bytes]:
  digest = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        digest[os.path.relpath(path, directory)] = f.read()
  return digest


# ---- Bad data --------------------------------------------------------------------------------

_NAMED_BREAKAGES = [
    ("video_wrong_shape", "video frames decode to shape (8, 8, 3) dtype uint8, expected "
                          "(16, 16, 3) uint8"),
    ("depth_wrong_dtype", "depth frames decode to shape (16, 16, 1) dtype uint8, expected "
                          "(16, 16, 1) uint16"),
    ("nan_depth_range", "depth_range contains NaN or inf"),
]
_UNNAMED_BREAKAGES = ["video_corrupt_png", "garbage"]


def _iterate_train_split(data_dir: str) -> None:
  from videolib.data import pipeline  # pylint: disable=g-import-not-at-top
  config = fi.get_config(data_dir)
  config.data.features = ("video", "depth")
  iterator = pipeline.make_train_iterator(config.data, global_batch_size=8, seed=0,
                                          process_index=0, process_count=1)
  for _ in range(32 // 8):  # One epoch.
    next(iterator)


@pytest.mark.parametrize("how,expectation", _NAMED_BREAKAGES)
def test_bad_record_error_names_split_index_video_name_and_expectation(
    how, expectation, data_dir, tmp_path):
  copy = fi.copy_workdir(data_dir, str(tmp_path / "tfds"))
  video_name = fi.write_bad_record(copy, "train", 5, how)
  with pytest.raises(ValueError) as error:
    _iterate_train_split(copy)
  assert f"Record train[5] (video_name=b'{video_name}')" in str(error.value)
  assert expectation in str(error.value)


@pytest.mark.parametrize("how", _UNNAMED_BREAKAGES)
def test_undecodable_record_error_names_split_and_index(how, data_dir, tmp_path):
  copy = fi.copy_workdir(data_dir, str(tmp_path / "tfds"))
  fi.write_bad_record(copy, "train", 5, how)
  with pytest.raises(Exception, match=r"train\[5\]"):
    _iterate_train_split(copy)


@pytest.mark.slow
def test_training_stops_at_a_bad_record_naming_it(data_dir, tmp_path):
  """Through the CLI: the record is reached mid-epoch, after start-up and some steps."""
  copy = fi.copy_workdir(data_dir, str(tmp_path / "tfds"))
  video_name = fi.write_bad_record(copy, "train", 20, "video_wrong_shape")
  run = fi.run_to_end(str(tmp_path / "run"), copy, f"--config.num_train_steps={_STEPS}")
  assert run.process.returncode != 0
  assert f"Record train[20] (video_name=b'{video_name}'): video frames decode" in run.log()


# ---- Long mode: random kill points -----------------------------------------------------------

_LONG_STEPS = 160
_LONG_INTERVAL = 8
_LONG_KILLS = 24


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_async", [False, True])
def test_random_kill_points_lose_no_steps_and_resume_bitwise(
    checkpoint_async, data_dir, tmp_path):
  """SIGKILL at 24 random moments of one run; every resumed segment must match.

  Two thirds of the kills come when the run has logged a random step, one third after a
  random delay from the process start (which can land in start-up, compilation, restore
  or a checkpoint save). Prints the figures for docs/reliability.md.

  Synchronous saves lose at most one checkpoint interval. Async saves train on while the
  save is written, so a kill in that window also loses the steps since the save began:
  at most one interval plus the steps of one save.
  """
  overrides = (f"--config.num_train_steps={_LONG_STEPS}",
               f"--config.checkpoint_every_steps={_LONG_INTERVAL}",
               f"--config.checkpoint_async={checkpoint_async}")
  reference_dir = str(tmp_path / "reference")
  run = fi.run_to_end(reference_dir, data_dir, *overrides)
  assert run.process.returncode == 0, run.log()[-3000:]
  expected = fi.compared(reference_dir)

  rng = random.Random(0)
  workdir = str(tmp_path / "killed")
  kill_steps = sorted(rng.sample(range(2, _LONG_STEPS - 2), _LONG_KILLS))
  outcomes = []
  for kill_index, kill_step in enumerate(kill_steps):
    before = fi.checkpoint_steps(workdir)
    records_before = fi.records(workdir)
    run = fi.Run(workdir, data_dir, *overrides)
    started = time.monotonic()
    if kill_index % 3 == 2:
      # At the latest when the run reaches the next kill's step, so that a fast machine
      # does not finish the run inside the delay and leave the later kills nothing to kill.
      next_step = (kill_steps + [_LONG_STEPS - 2])[kill_index + 1]
      try:
        run.wait_for_step(next_step, timeout=rng.uniform(0.0, 15.0))
      except TimeoutError:
        pass
      how = "delay"
    else:
      previous = fi.last_train_step(workdir) or 0
      run.wait_for_step(max(kill_step, previous + 1))
      time.sleep(rng.uniform(0.0, 0.2))
      how = "step"
    exit_code = fi.kill(run)
    tmp_dirs = [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n] \
        if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
    last_logged = fi.last_train_step(workdir) or 0
    after = fi.checkpoint_steps(workdir)
    newest = after[-1] if after else 0
    logged = fi.compared(workdir)
    # A kill before the process logged anything (start-up, compilation) loses nothing new.
    wrote = fi.records(workdir) != records_before
    outcomes.append(dict(
        how=how, seconds=round(time.monotonic() - started, 1), exit=exit_code,
        resumed_from=before[-1] if before else 0, last_logged=last_logged,
        newest_checkpoint=newest, lost=last_logged - newest if wrote else 0,
        tmp_dirs=tmp_dirs if wrote else [],
        differs=sorted(step for step in logged if logged[step] != expected[step])))

  run = fi.run_to_end(workdir, data_dir, *overrides)
  assert run.process.returncode == 0, run.log()[-3000:]
  final = fi.compared(workdir)
  summary = dict(
      kills=len(outcomes),
      kills_losing_steps=sum(o["lost"] > 0 for o in outcomes),
      kills_during_save=sum(bool(o["tmp_dirs"]) for o in outcomes),
      max_lost_steps=max(o["lost"] for o in outcomes),
      kills_losing_more_than_the_interval=sum(o["lost"] > _LONG_INTERVAL for o in outcomes),
      segments_that_differ=sum(bool(o["differs"]) for o in outcomes),
      final_run_equals_reference=final == expected,
  )
  print(json.dumps(dict(checkpoint_async=checkpoint_async, outcomes=outcomes,
                        summary=summary)))
  assert summary["kills"] == _LONG_KILLS and all(o["exit"] != 0 for o in outcomes), summary
  assert summary["segments_that_differ"] == 0
  assert final == expected
  if not checkpoint_async:
    assert summary["kills_losing_more_than_the_interval"] == 0
