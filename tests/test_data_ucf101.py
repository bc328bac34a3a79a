"""The UCF101 reader on a tiny local dataset written by TFDS's own `ucf101` builder.

The builder below is tensorflow_datasets' `Ucf101` with only the download replaced by
generated videos, so the stored `features.json` (JPEG `Video` of shape (None, None, None,
3), 101-name `ClassLabel`), the directory layout `ucf101/ucf101_1/2.0.0` and the
ArrayRecord files are exactly what `tfds build ucf101 --config=ucf101_1
--file_format=array_record` writes.
"""
import io
import json
import os

from etils import epath
import ml_collections
import numpy as np
from PIL import Image
import pytest
from tensorflow_datasets.core.utils import py_utils
from tensorflow_datasets.video import ucf101 as tfds_ucf101

from configs import mgtc_ucf101
from mgtc import task as mgtc_task
from videolib import train
from videolib.data import pipeline
from videolib.data import ucf101

_H, _W = 32, 40
# (frames, label) per video: train has a 7-frame video, shorter than a 4 x 2 window.
_TRAIN = [(20, 3), (20, 17), (18, 42), (20, 99), (7, 0), (20, 64), (15, 100), (20, 5)]
_TEST = [(20, 7), (9, 1), (20, 58), (16, 23), (20, 71)]


def _video(seed: int, num_frames: int) -> np.ndarray:
  """Smooth frames (JPEG-friendly) whose mean brightness encodes the frame index."""
  y, x = np.mgrid[:_H, :_W]
  t = np.arange(num_frames)[:, None, None]
  red = 10 * t + 0 * x  # Frame index, constant over the frame.
  green = 4 * x + 20 * (seed % 3) + 0 * t  # Horizontal ramp: shows the crop offset.
  blue = 5 * y + 0 * t
  return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


class Ucf101(tfds_ucf101.Ucf101, skip_registration=True):
  """TFDS's ucf101 builder (features, configs, version) with generated videos."""

  @py_utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _split_generators(self, dl_manager):
    return {"train": self._generate(_TRAIN, 0), "test": self._generate(_TEST, 100)}

  def _generate(self, videos, offset):
    for i, (num_frames, label) in enumerate(videos):
      yield f"v_{offset + i:03d}.avi", {"video": _video(offset + i, num_frames),
                                         "label": label}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("ucf101")
  Ucf101(config="ucf101_1", data_dir=str(root),
         file_format="array_record").download_and_prepare()
  return str(root)


def _config(data_dir, **overrides):
  config = pipeline.default_data_config().to_dict()
  config.update(name="ucf101/ucf101_1", data_dir=data_dir, eval_split="test",
                num_frames=4, frame_stride=2, resolution=32, random_crop=True,
                features=("video", "label"))
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def _stored(data_dir, split):
  """(frames [T, H, W, 3] decoded with PIL, label) of every video, in stored order."""
  source = ucf101.load_builder("ucf101/ucf101_1", data_dir).as_data_source(
      split, decoders={"video": pipeline.movi.NoDecoding()})
  return [(np.stack([np.asarray(Image.open(io.BytesIO(f))) for f in source[i]["video"]]),
           int(source[i]["label"])) for i in range(len(source))]


def test_stored_dataset_has_tfds_ucf101_layout_and_feature_spec(data_dir):
  path = ucf101.dataset_dir("ucf101/ucf101_1", data_dir)
  assert path == os.path.join(data_dir, "ucf101", "ucf101_1", "2.0.0")
  builder = ucf101.load_builder("ucf101/ucf101_1", data_dir)
  assert type(builder).__name__ == "ReadOnlyBuilder"
  features = builder.info.features
  assert features["video"].shape == (None, None, None, 3)
  assert features["label"].num_classes == ucf101.NUM_CLASSES == 101
  with open(os.path.join(path, "features.json")) as f:
    assert "jpeg" in json.dumps(json.load(f))
  assert builder.info.splits["train"].num_examples == len(_TRAIN)


def test_clip_frame_indices_centre_random_and_repeat_the_last_frame():
  np.testing.assert_array_equal(ucf101.clip_frame_indices(20, 4, 2, None), [6, 8, 10, 12])
  np.testing.assert_array_equal(ucf101.clip_frame_indices(7, 4, 2, None), [0, 2, 4, 6])
  np.testing.assert_array_equal(ucf101.clip_frame_indices(5, 4, 2, None), [0, 2, 4, 4])
  np.testing.assert_array_equal(ucf101.clip_frame_indices(1, 3, 4, None), [0, 0, 0])
  starts = {int(ucf101.clip_frame_indices(20, 4, 2, np.random.default_rng(s))[0])
            for s in range(200)}
  assert starts == set(range(14))  # Every full window, and only those.
  assert ucf101.square_crop(32, 40, None) == (0, 4, 32, 32)
  assert ucf101.square_crop(50, 30, None) == (10, 0, 30, 30)
  offsets = {ucf101.square_crop(32, 40, np.random.default_rng(s))[1] for s in range(200)}
  assert offsets == set(range(9))


def test_eval_batches_are_centred_clips_with_labels_and_padding(data_dir):
  config = _config(data_dir)
  iterator = pipeline.make_eval_iterator(config, global_batch_size=4, process_index=0,
                                         process_count=1)
  batches = list(iterator)
  assert iterator.num_batches == len(batches) == 2
  mask = np.concatenate([b["_mask"] for b in batches])
  np.testing.assert_array_equal(mask, [True] * 5 + [False] * 3)
  labels = np.concatenate([b["label"] for b in batches])
  stored = _stored(data_dir, "test")  # TFDS stores examples in hashed-key order.
  np.testing.assert_array_equal(labels[:5], [label for _, label in stored])
  assert sorted(labels[:5]) == sorted(label for _, label in _TEST)
  for batch in batches:
    assert batch["video"].shape == (4, 4, 32, 32, 3) and batch["video"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    assert 0.0 <= batch["video"].min() and batch["video"].max() <= 1.0
  video = np.concatenate([b["video"] for b in batches])
  for i, (frames, _) in enumerate(stored):
    indices = ucf101.clip_frame_indices(len(frames), 4, 2, None)
    # Resolution = short side: the centred 32 x 32 square, no resampling.
    np.testing.assert_allclose(video[i], frames[indices, :, 4:36] / 255, atol=1e-6)
  # The 9-frame video: frames 1, 3, 5, 7 (the centred window); brightness 10 t.
  (short,) = [i for i, (frames, _) in enumerate(stored) if len(frames) == 9]
  np.testing.assert_allclose(video[short, :, :, :, 0].mean(axis=(1, 2)) * 255,
                             [10, 30, 50, 70], atol=3)
  np.testing.assert_array_equal(video[5:], np.stack([video[0]] * 3))  # Padding copies 0.


def test_train_batches_are_random_windows_and_square_crops(data_dir):
  config = _config(data_dir)
  iterator = pipeline.make_train_iterator(config, global_batch_size=4, seed=3,
                                          process_index=0, process_count=1)
  labels = {label: frames for frames, label in _stored(data_dir, "train")}
  seen_starts, seen_offsets = set(), set()
  for _ in range(6):
    batch = next(iterator)
    assert batch["video"].shape == (4, 4, 32, 32, 3) and batch["_mask"].all()
    for clip, label in zip(batch["video"], batch["label"]):
      frames = labels[int(label)]  # Labels are unique per train video.
      matches = [
          (start, x0)
          for start in range(max(len(frames) - 7, 0) + 1) for x0 in range(9)
          if np.allclose(clip, frames[np.minimum(start + 2 * np.arange(4), len(frames) - 1),
                                      :, x0:x0 + 32] / 255, atol=1e-6)]
      assert matches, f"label {label}: clip is not a window + crop of its video"
      seen_starts.add(matches[0][0])
      seen_offsets.add(matches[0][1])
  assert len(seen_starts) > 3 and len(seen_offsets) > 3


def test_train_iterator_is_deterministic_per_seed_and_resumable(data_dir):
  config = _config(data_dir, resolution=24)  # Resampled crops.

  def take(seed, n=3):
    iterator = pipeline.make_train_iterator(config, global_batch_size=2, seed=seed,
                                            process_index=0, process_count=1)
    return [next(iterator) for _ in range(n)], iterator

  first, iterator = take(0)
  again, _ = take(0)
  other, _ = take(1)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["video"], b["video"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert not all(np.array_equal(a["video"], b["video"]) for a, b in zip(first, other))
  assert first[0]["video"].shape == (2, 4, 24, 24, 3)
  state = iterator.get_state()
  expected = next(iterator)
  resumed = pipeline.make_train_iterator(config, global_batch_size=2, seed=0,
                                         process_index=0, process_count=1)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["video"], expected["video"])


def test_batch_spec_matches_the_batches(data_dir):
  config = _config(data_dir, resolution=16)
  spec = pipeline.batch_spec(config, 4)
  batch = next(pipeline.make_train_iterator(config, global_batch_size=4, seed=0,
                                            process_index=0, process_count=1))
  assert set(spec) == set(batch) == {"_mask", "video", "label"}
  for key, value in batch.items():
    assert value.shape == spec[key].shape and value.dtype == spec[key].dtype


def test_missing_dataset_names_path_and_prepare_command(tmp_path):
  config = _config(str(tmp_path))
  with pytest.raises(FileNotFoundError) as error:
    pipeline.make_train_iterator(config, global_batch_size=2, seed=0, process_index=0,
                                 process_count=1)
  message = str(error.value)
  assert f"{tmp_path}/ucf101/ucf101_1/2.0.0" in message
  assert (f"tfds build ucf101 --config=ucf101_1 --data_dir={tmp_path} "
          "--file_format=array_record") in message
  assert "tfds convert_format" in message


@pytest.mark.parametrize("overrides, match", [
    ({"features": ("video", "depth")}, "has only 'video' and 'label'"),
    ({"resolution": (32, 24)}, "square crops"),
    ({"name": "ucf101/ucf101_4"}, "Unknown UCF101 dataset 'ucf101/ucf101_4'"),
    ({"name": "ucf101/ucf101_1_256", "resolution": 288}, r"larger than the ucf101"),
])
def test_bad_ucf101_configs_raise_naming_the_field(data_dir, overrides, match):
  with pytest.raises(ValueError, match=match):
    pipeline.batch_spec(_config(data_dir, **overrides), 4)


def test_mgtc_ucf101_config_trains_two_steps_end_to_end(data_dir, tmp_path):
  """configs/mgtc_ucf101.py with a tiny model, the local data and 2 steps."""
  config = mgtc_ucf101.get_config("method=mgtc,ratio=0.25")
  assert config.optimizer.layer_decay == 0.7 and config.data.name == "ucf101/ucf101_1"
  config.data.update(data_dir=data_dir, num_frames=4, frame_stride=2, resolution=32)
  config.model.update(num_frames=4, image_size=32, patch_size=8, width=32, depth=2,
                      num_heads=2, dtype="float32")
  config.update(batch_size=8, eval_batch_size=8, num_train_steps=2, log_every_steps=1,
                eval_every_steps=2, checkpoint_every_steps=2, num_summary_videos=1,
                checkpoint_async=False)
  config.optimizer.warmup_steps = 1
  task = mgtc_task.make_task(config)
  result = train.train_and_evaluate(config, str(tmp_path), task)
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  train_records = [r for r in records if r["split"] == "train"]
  (eval_record,) = [r for r in records if r["split"] == "test"]
  assert [r["step"] for r in train_records] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in train_records)
  assert 0.0 <= eval_record["top_1"] <= eval_record["top_5"] <= 1.0
  assert np.isfinite(result["eval_loss"])
