"""benchmarks/train_from_records.py: exported records feed the pipeline the same batches."""
import itertools

import numpy as np
import pytest

import benchmark_scripts
import tiny_configs
from videolib.data import pipeline

train_from_records = benchmark_scripts.load("train_from_records")


@pytest.fixture
def data_config(tmp_path):
  return tiny_configs.tiny_moog_config(str(tmp_path / "tfds")).data


@pytest.fixture
def restore_pipeline(monkeypatch):
  """`use_records` rebinds the pipeline's source opener: put it back after the test."""
  monkeypatch.setattr(pipeline, "_open_source", pipeline._open_source)


def _batches(data_config):
  train = pipeline.make_train_iterator(data_config, global_batch_size=4, seed=3)
  evaluation = pipeline.make_eval_iterator(data_config, global_batch_size=4)
  return list(itertools.islice(train, 3)) + list(evaluation)


def test_records_give_the_pipelines_train_and_eval_batches(data_config, tmp_path,
                                                           restore_pipeline):
  expected = _batches(data_config)
  path = str(tmp_path / "records.npz")
  train_from_records.export_records(data_config, path)
  train_from_records.use_records(data_config, path)
  got = _batches(data_config)
  assert len(got) == len(expected) == 3 + 2  # 8 eval examples in batches of 4.
  for want, have in zip(expected, got):
    assert want.keys() == have.keys()
    for key in want:
      np.testing.assert_array_equal(want[key], have[key])


def test_records_of_another_dataset_are_refused(data_config, tmp_path, restore_pipeline):
  path = str(tmp_path / "records.npz")
  train_from_records.export_records(data_config, path)
  data_config.name = "synthetic_movi/16x16_8f_train32_val8"
  with pytest.raises(ValueError, match="export the config's dataset"):
    train_from_records.use_records(data_config, path)


def test_records_hold_video_only(data_config, tmp_path):
  data_config.features = ("video", "depth")
  with pytest.raises(ValueError, match="hold video only"):
    train_from_records.export_records(data_config, str(tmp_path / "records.npz"))
