"""MooG through the shared trainer: learning, resuming, describing, config errors."""

import json
import re
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image
import tiny_configs

from configs import moog_movi
from moog import task as moog_task
from videolib import train



@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  return tiny_configs.tiny_moog_config(
      data_dir, **{"data.num_eval_examples": 16, "num_train_steps": 40,
                   "log_every_steps": 10, "eval_every_steps": 40,
                   "checkpoint_every_steps": 20, "optimizer.warmup_steps": 5,
                   "optimizer.peak_lr": 3e-3, **overrides})


def _records(workdir, split="train"):
  with open(f"{workdir}/metrics.jsonl") as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def test_training_lowers_the_loss_and_evaluates_against_the_repeat_baseline(data_dir, tmp_path):
  config = _tiny_config(data_dir)
  result = train.train_and_evaluate(config, str(tmp_path), moog_task.MooGTask(config))
  losses = [r["loss"] for r in _records(tmp_path)]
  assert len(losses) == 4
  assert losses[-1] < 0.7 * losses[0], losses
  evals = _records(tmp_path, "validation")
  assert evals[-1]["step"] == 40
  for key in ("loss", "psnr", "psnr_frames_1plus", "psnr_repeat_previous_frame"):
    assert np.isfinite(evals[-1][key]), key
  assert result["eval_psnr"] == pytest.approx(evals[-1]["psnr"])
  assert list((tmp_path / "summaries").glob("next_frame_prediction_*.gif"))
  (trajectories,) = (tmp_path / "summaries").glob("token_trajectories_*.gif")
  # 16x16 frames drawn 4x larger, then doubled to the GIFs' 128-pixel minimum; videos side
  # by side, one GIF frame per step.
  with Image.open(trajectories) as gif:
    assert (gif.size, gif.n_frames) == ((128 * config.num_summary_videos, 128), 4)
  # Eval-only from another run's parameters (no checkpoint of its own) gives the same numbers.
  eval_config = _tiny_config(data_dir, init_from=str(tmp_path))
  eval_dir = tmp_path / "eval_only"
  metrics = train.evaluate(eval_config, str(eval_dir), moog_task.MooGTask(eval_config))
  assert metrics["psnr"] == pytest.approx(evals[-1]["psnr"], rel=1e-6)
  assert json.loads((eval_dir / "eval_validation_step0.json").read_text())["psnr"] == (
      pytest.approx(metrics["psnr"]))


def test_resume_from_a_checkpoint_continues_the_same_run(data_dir, tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  config = _tiny_config(data_dir, num_train_steps=30, eval_every_steps=1000,
                        checkpoint_every_steps=10, log_every_steps=1)
  train.train_and_evaluate(config, str(straight), moog_task.MooGTask(config))
  # A run that was stopped after step 10: only that checkpoint exists in its workdir.
  shutil.copytree(straight / "checkpoints" / "10", resumed / "checkpoints" / "10")
  train.train_and_evaluate(config, str(resumed), moog_task.MooGTask(config))
  straight_losses = {r["step"]: r["loss"] for r in _records(straight)}
  resumed_losses = {r["step"]: r["loss"] for r in _records(resumed)}
  assert sorted(resumed_losses) == list(range(11, 31))
  for step in range(11, 31):
    assert resumed_losses[step] == straight_losses[step], step


def test_describe_reports_params_per_part_and_train_step_flops(data_dir):
  config = _tiny_config(data_dir)
  description = train.describe(config, moog_task.MooGTask(config))
  params = description["params"]
  assert set(params) == {"encoder", "predictor", "corrector", "decoder", "state_norm", "total"}
  assert params["total"] == sum(v for k, v in params.items() if k != "total")
  # FLOPs grow with the clip length: XLA counts a loop body once, so `describe` counts
  # on the unrolled step (with the rolled scan, 8 frames would count like ~5).
  config.data.num_frames = 8
  longer = train.describe(config, moog_task.MooGTask(config))
  assert longer["train_step_flops"] / description["train_step_flops"] == pytest.approx(2, rel=0.05)


@pytest.mark.parametrize("field,value,message", [
    ("model.predictor.num_heads", 3, r"model\.predictor\.num_heads=3 does not divide"),
    ("data.num_frames", 1, r"config\.data\.num_frames=1"),
    ("data.resolution", 18, r"config\.data\.resolution=18 is not divisible"),
    ("batch_size", 12, r"config\.batch_size=12 is not divisible by the 8 devices"),
])
def test_config_errors_name_the_field_before_compiling(data_dir, tmp_path, field, value, message):
  config = _tiny_config(data_dir, **{field: value})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path), moog_task.MooGTask(config))


def test_zero_summary_videos_evaluates_and_draws_nothing(data_dir, tmp_path):
  config = _tiny_config(data_dir, num_train_steps=2, eval_every_steps=2,
                        checkpoint_every_steps=2, num_summary_videos=0)
  result = train.train_and_evaluate(config, str(tmp_path), moog_task.MooGTask(config))
  assert np.isfinite(result["eval_psnr"])
  assert not list(tmp_path.glob("summaries/*"))


def test_unknown_config_field_on_the_command_line_is_an_error_naming_it():
  result = subprocess.run(
      [sys.executable, "-m", "moog.main", "--config=configs/moog_tiny.py",
       "--config.num_train_stepz=3", "--mode=describe"],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode != 0
  assert "num_train_stepz" in result.stderr


def test_console_shows_eval_results_hides_library_logs_and_says_when_a_run_is_complete(
    data_dir, tmp_path):
  command = [
      sys.executable, "-m", "moog.main", "--config=configs/moog_tiny.py",
      f"--workdir={tmp_path}", f"--config.data.data_dir={data_dir}",
      f"--config.data.name={tiny_configs.DATASET}", "--config.data.resolution=16",
      "--config.data.num_frames=4", "--config.data.num_eval_examples=16",
      "--config.num_train_steps=4", "--config.eval_every_steps=4",
      "--config.checkpoint_every_steps=2", "--config.log_every_steps=2",
      "--config.num_summary_videos=0", "--config.model.scan_unroll=1"]
  first = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
  console = first.stdout + first.stderr
  number = r"-?\d+(\.\d+)?"
  assert re.search(rf"eval step 4 \(validation\): .*psnr_frames_1plus {number}, "
                   rf"psnr_mean_colour {number}, psnr_repeat_previous_frame {number}",
                   console), console
  assert "Parameters per part" in console  # This project's INFO lines stay...
  assert "checkpoint_manager.py" not in console  # ... orbax's (about 40 per save) go.
  again = subprocess.run(command + ["--library_logs"], capture_output=True, text=True,
                         timeout=300, check=True)
  assert "is complete: its newest checkpoint is at step 4" in again.stdout
  assert "larger --config.num_train_steps" in again.stdout
  assert "checkpoint_manager.py" in again.stderr  # --library_logs brings them back.


def test_describe_prints_flops_with_units(data_dir):
  config = _tiny_config(data_dir)
  description = train.describe(config, moog_task.MooGTask(config))
  gflop = description["train_step_flops"] / 1e9
  assert description["train_step"].startswith(f"{gflop:,.1f} GFLOP per step at batch 8 (")
  assert f"{gflop / 8:,.2f} GFLOP per example" in description["train_step"]


def test_paper_config_has_the_official_parameter_count():
  config = moog_movi.get_config()
  task = moog_task.MooGTask(config)
  spec = {"video": jax.ShapeDtypeStruct((1, 2, 128, 128, 3), np.float32)}
  params = jax.eval_shape(task.init, jax.random.key(0), spec)
  assert train.count_params_per_part(params)["total"] == 34_726_787


@pytest.mark.slow
def test_paper_config_runs_one_training_step_on_cpu(data_dir, tmp_path):
  config = moog_movi.get_config("synthetic,res=128")
  config.data.data_dir = data_dir
  config.data.name = "synthetic_movi/128x128_8f_train8_val8"
  config.data.num_frames = 2
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 1
  config.data.num_eval_examples = 8
  result = train.train_and_evaluate(config, str(tmp_path), moog_task.MooGTask(config))
  assert np.isfinite(result["loss"])
