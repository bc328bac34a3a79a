"""videolib/data/records.py: exported records feed the pipeline and training without TFDS."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

import tiny_configs
from moog import task as moog_task
from videolib import train
from videolib.data import pipeline


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """The tiny test data (TFDS) and its records file."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  path = str(tmp_path_factory.mktemp("records") / "records.npz")
  pipeline.export_records(tiny_configs.tiny_moog_config(data_dir).data, path)
  return data_dir, path


@pytest.fixture
def data_config(exported):
  return tiny_configs.tiny_moog_config(exported[0]).data


def _batches(data_config):
  train = pipeline.make_train_iterator(data_config, global_batch_size=4, seed=3)
  evaluation = pipeline.make_eval_iterator(data_config, global_batch_size=4)
  return list(itertools.islice(train, 3)) + list(evaluation)


def test_records_give_the_pipelines_train_and_eval_batches(data_config, exported):
  expected = _batches(data_config)
  data_config.records = exported[1]
  data_config.data_dir = "/nonexistent"  # Records only: TFDS is never opened.
  got = _batches(data_config)
  assert len(got) == len(expected) == 3 + 2  # 8 eval examples in batches of 4.
  for want, have in zip(expected, got):
    assert want.keys() == have.keys()
    for key in want:
      np.testing.assert_array_equal(want[key], have[key])


def test_records_of_another_dataset_are_refused(data_config, exported):
  data_config.update(records=exported[1], name="synthetic_movi/16x16_8f_train32_val8")
  with pytest.raises(ValueError, match="export the config's dataset"):
    pipeline.make_eval_iterator(data_config, global_batch_size=4)


def test_records_hold_video_only(data_config, exported, tmp_path):
  data_config.features = ("video", "depth")
  with pytest.raises(ValueError, match="hold video only"):
    pipeline.export_records(data_config, str(tmp_path / "records.npz"))
  data_config.records = exported[1]
  with pytest.raises(ValueError, match="hold video only"):
    pipeline.make_eval_iterator(data_config, global_batch_size=4)


def test_missing_split_and_missing_file_say_what_to_do(data_config, exported, tmp_path):
  data_config.update(records=exported[1], eval_split="test")
  with pytest.raises(ValueError, match=r"Split 'test' not in config\.data\.records=.*"
                     r"\(has \['train', 'validation'\]\)"):
    pipeline.make_eval_iterator(data_config, global_batch_size=4)
  data_config.records = str(tmp_path / "absent.npz")
  with pytest.raises(FileNotFoundError, match="videolib.data.export_records"):
    pipeline.make_eval_iterator(data_config, global_batch_size=4)


def test_corrupt_records_files_are_refused(data_config, exported, tmp_path):
  with open(exported[1], "rb") as f:
    content = f.read()
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(content[:len(content) // 2])
  data_config.records = str(truncated)
  with pytest.raises(ValueError, match="not a readable records file.*export it again"):
    pipeline.make_eval_iterator(data_config, global_batch_size=4)

  with np.load(exported[1]) as data:
    arrays = dict(data)
  arrays["eval_offsets"] = arrays["eval_offsets"][:-1]
  shuffled = tmp_path / "bad_offsets.npz"
  np.savez(shuffled, **arrays)
  data_config.records = str(shuffled)
  with pytest.raises(ValueError, match="offsets of split 'validation' do not fit"):
    pipeline.make_eval_iterator(data_config, global_batch_size=4)


def test_training_on_records_never_opens_tfds_and_app_runs_without_tensorflow(
    exported, tmp_path, monkeypatch):
  def no_tfds(data_config):
    raise AssertionError(f"TFDS opened for {data_config.name}")

  monkeypatch.setattr(pipeline, "_load_builder", no_tfds)
  with monkeypatch.context() as without_tensorflow:
    without_tensorflow.setitem(sys.modules, "tensorflow", None)  # The import now fails.
    pipeline.hide_accelerators_from_tensorflow()
  config = tiny_configs.tiny_moog_config(
      "/nonexistent", **{"data.records": exported[1], "num_train_steps": 2,
                         "log_every_steps": 1, "eval_every_steps": 2,
                         "checkpoint_every_steps": 2, "num_summary_videos": 0})
  train.train_and_evaluate(config, str(tmp_path), moog_task.MooGTask(config))
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]
  evaluation = [r for r in records if r["split"] == "validation"]
  assert len(evaluation) == 1 and np.isfinite(evaluation[0]["psnr_frames_1plus"])


def test_export_command_writes_the_same_file_as_the_function(exported, tmp_path):
  out = tmp_path / "cli.npz"
  result = subprocess.run(
      [sys.executable, "-m", "videolib.data.export_records", "--config=configs/moog_tiny.py",
       f"--out={out}", f"--config.data.name={tiny_configs.DATASET}",
       f"--config.data.data_dir={exported[0]}", "--config.data.resolution=16"],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(exported[1]) as want, np.load(out) as have:
    assert sorted(want) == sorted(have)
    for key in want:
      np.testing.assert_array_equal(want[key], have[key])
