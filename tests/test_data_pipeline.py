"""Tests of the synthetic_movi builder and the grain input pipeline."""
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
import threadpoolctl

from videolib.data import movi
from videolib.data import pipeline
from videolib.data import scenes
from videolib.data import synthetic

_NAME = "synthetic_movi/" + synthetic.config_name(32, 24, num_train=24, num_validation=10)
_ALL_FEATURES = ("video", "depth", "segmentations", "boxes", "tracks", "label")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir, **overrides):
  config = pipeline.default_data_config()
  config.name = _NAME
  config.data_dir = data_dir
  config.features = _ALL_FEATURES
  config.num_tracks = 16
  config.max_instances = 5
  config.update(overrides)
  return config


def _builder(data_dir, name=_NAME):
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return builder


def test_config_names_round_trip():
  assert synthetic.config_name(32, 48, 2) == "32x32_48f_2x"
  assert synthetic.config_name(64, 24, num_train=16, num_validation=8, seed=3) == (
      "64x64_24f_train16_val8_seed3")
  config = synthetic.config_from_name("32x32_48f_2x")
  assert (config.height, config.num_frames, config.frame_rate, config.num_train) == (
      32, 48, 2, 2000)
  names = {c.name for c in synthetic.SyntheticMovi.BUILDER_CONFIGS}
  assert {"32x32_24f", "32x32_8f", "32x32_32f", "32x32_48f_2x", "128x128_24f"} <= names
  with pytest.raises(ValueError, match="Unknown synthetic_movi config '32x32'"):
    synthetic.config_from_name("32x32")


def test_stored_features_follow_movi_and_round_trip(data_dir):
  builder = _builder(data_dir)
  features = builder.info.features
  assert isinstance(features["video"], tfds.features.Video)
  assert features["depth"].feature.np_dtype == np.uint16
  assert features["segmentations"].feature.np_dtype == np.uint8
  assert builder.info.splits["train"].num_examples == 24
  # Rendering the same example again gives exactly the stored arrays.
  record = pipeline._CheckedSource(builder, "validation", _ALL_FEATURES,
                                   pipeline._stored_info(_config(data_dir)))[3]
  index = int(record["video_name"].decode().split("_")[-1])
  expected = scenes.generate(builder.builder_config.scene_config(), [0, 1, index])
  frames = np.arange(24)
  stored = pipeline._stored_info(_config(data_dir))
  np.testing.assert_array_equal(
      pipeline._decode_frames(record, "video", frames, stored), expected["video"])
  np.testing.assert_array_equal(
      pipeline._decode_frames(record, "segmentations", frames, stored),
      expected["segmentations"])
  depth = pipeline._decode_frames(record, "depth", frames, stored)
  np.testing.assert_allclose(scenes.decode_depth(depth, record["depth_range"]),
                             expected["depth"], atol=2e-4)
  for k in range(expected["num_instances"]):
    visible = np.flatnonzero(expected["instances/bbox_frames"][k])
    np.testing.assert_array_equal(record["instance_box_frames"][k], visible)
    np.testing.assert_allclose(record["instance_boxes"][k],
                               expected["instances/bboxes"][k, visible], atol=1e-6)
  np.testing.assert_array_equal(record["target_points"], expected["target_points"])
  assert record["label"] == expected["label"]


def test_builder_is_deterministic_per_seed(tmp_path):
  name = "synthetic_movi/" + synthetic.config_name(32, 8, num_train=3, num_validation=1)
  seeded = "synthetic_movi/" + synthetic.config_name(32, 8, num_train=3, num_validation=1,
                                                     seed=1)
  a, b, c = (movi.data_source(_builder(str(tmp_path / d), n), "train")
             for d, n in (("a", name), ("b", name), ("c", seeded)))
  for i in range(3):
    for key in ("video", "depth", "target_points"):
      np.testing.assert_array_equal(a[i][key], b[i][key], err_msg=key)
    assert a[i]["metadata"]["video_name"] == b[i]["metadata"]["video_name"]
  assert not np.array_equal(a[0]["video"], c[0]["video"])


def test_batches_match_spec_and_contract(data_dir):
  config = _config(data_dir)
  iterator = pipeline.make_train_iterator(config, global_batch_size=4, seed=0,
                                          process_index=0, process_count=1)
  batch = next(iterator)
  spec = pipeline.batch_spec(config, 4)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      k: (v.shape, v.dtype) for k, v in spec.items()}
  assert 0.0 <= batch["video"].min() and batch["video"].max() <= 1.0
  assert batch["_mask"].all()
  assert 2.0 <= batch["depth"].min() and batch["depth"].max() < 12.0
  assert set(np.unique(batch["segmentations"])) <= set(range(5))
  assert not batch["boxes"][~batch["boxes_valid"]].any()
  valid_boxes = batch["boxes"][batch["boxes_valid"]]
  assert np.all(valid_boxes[:, 2] > valid_boxes[:, 0])
  assert batch["tracks_valid"].sum() > 0
  # Queries are the window's first frame, where valid tracks are visible.
  valid = batch["tracks_valid"]
  assert not batch["occluded"][..., 0][valid].any()
  np.testing.assert_array_equal(batch["query_points"][..., 0], 0)
  np.testing.assert_allclose(batch["query_points"][..., 1:][valid],
                             batch["target_points"][:, :, 0, ::-1][valid])


def test_tracks_stay_on_their_segment_after_crop_and_window(data_dir):
  config = _config(data_dir, frame_stride=2, num_frames=6, resolution=32, random_crop=True)
  iterator = pipeline.make_train_iterator(config, global_batch_size=4, seed=1,
                                          process_index=0, process_count=1)
  own = total = 0
  for _ in range(3):
    batch = next(iterator)
    seg = batch["segmentations"][..., 0]
    for b in range(4):
      ids = seg[b, 0, batch["query_points"][b, :, 1].astype(int),
                batch["query_points"][b, :, 2].astype(int)]
      points = batch["target_points"][b]
      x = np.clip(points[..., 0].astype(int), 0, 31)
      y = np.clip(points[..., 1].astype(int), 0, 31)
      visible = ~batch["occluded"][b] & batch["tracks_valid"][b][:, None]
      on_own = seg[b][np.arange(6)[None], y, x] == ids[:, None]
      own += on_own[visible].sum()
      total += visible.sum()
  # Nearest-neighbour resizing of the segmentation moves boundaries by <= 1 px.
  assert total > 100 and own / total > 0.85


def test_train_iterator_resumes_exactly(data_dir):
  config = _config(data_dir, features=("video", "tracks", "label"))
  iterator = pipeline.make_train_iterator(config, global_batch_size=4, seed=3,
                                          process_index=0, process_count=1)
  for _ in range(7):  # Crosses the epoch boundary (24 examples = 6 batches).
    next(iterator)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = [next(iterator) for _ in range(3)]
  restored = pipeline.make_train_iterator(config, global_batch_size=4, seed=3,
                                          process_index=0, process_count=1)
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_train_epochs_are_reshuffled_and_hosts_disjoint(data_dir):
  config = _config(data_dir, features=("label",), random_crop=False)

  def epoch_names(process_index, seed=0):
    iterator = pipeline.make_train_iterator(config, global_batch_size=4, seed=seed,
                                            process_index=process_index, process_count=2)
    return [tuple(next(iterator)["label"]) for _ in range(12)]

  host0, host1 = epoch_names(0), epoch_names(1)
  assert host0 != host1
  assert epoch_names(0) == host0
  assert epoch_names(0, seed=1) != host0


def test_eval_visits_every_example_once_over_two_hosts(data_dir):
  config = _config(data_dir, features=("video",), num_eval_examples=-1)
  seen = []
  num_batches = []
  for host in range(2):
    iterator = pipeline.make_eval_iterator(config, global_batch_size=4,
                                           process_index=host, process_count=2)
    batches = list(iterator)
    num_batches.append(len(batches))
    assert len(batches) == iterator.num_batches
    for batch in batches:
      assert batch["video"].shape[0] == 2
      seen.extend(batch["video"][batch["_mask"]].reshape(-1, 8 * 32 * 32 * 3).sum(-1))
  assert num_batches == [3, 3]  # 10 examples, padded to 12.
  assert len(seen) == 10 and len(set(np.round(seen, 3))) == 10
  source = pipeline._CheckedSource(_builder(data_dir), "validation", ("video",),
                                   pipeline._stored_info(config))
  want = [pipeline.preprocess(source[i], config, pipeline._stored_info(config), None)
          ["video"].sum() for i in range(10)]
  np.testing.assert_allclose(sorted(seen), sorted(want), rtol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (dict(num_frames=13, frame_stride=2), "spans 25 frames, but .* have 24 frames"),
    (dict(resolution=64), r"resolution=\(64, 64\) is larger than .* \(32, 32\)"),
    (dict(name="synthetic_movi/32x32"), "Unknown synthetic_movi config"),
    (dict(name="kinetics/400"), "Unknown dataset 'kinetics/400'"),
    (dict(features=("video", "flow")), r"Unknown data features \['flow'\]"),
])
def test_bad_configs_fail_before_reading_data(overrides, message):
  config = _config("/nonexistent", **overrides)
  with pytest.raises(ValueError, match=message):
    pipeline.batch_spec(config, 4)
  with pytest.raises(ValueError, match=message):
    pipeline.make_train_iterator(config, global_batch_size=4, seed=0,
                                 process_index=0, process_count=1)


def test_malformed_records_are_named(data_dir):
  config = _config(data_dir)
  stored = pipeline._stored_info(config)
  source = pipeline._CheckedSource(_builder(data_dir), "train", _ALL_FEATURES, stored)
  record = source[2]
  short = dict(record, video=record["video"][:20])
  with pytest.raises(ValueError, match=r"train\[2\] .*video has 20 frames, expected 24"):
    pipeline._check_record(short, "train", 2, stored)
  nan = dict(record, depth_range=np.array([np.nan, 1.0], np.float32))
  with pytest.raises(ValueError, match=r"train\[2\] \(video_name=b'train_\d+'\): "
                     "depth_range contains NaN"):
    pipeline._check_record(nan, "train", 2, stored)
  small = pipeline._stored_info(config).__class__(24, 16, 16, False)
  with pytest.raises(ValueError, match=r"video frames decode to shape \(32, 32, 3\) .* "
                     r"expected \(16, 16, 3\)"):
    pipeline.preprocess(record, config, small, rng=None)


def test_iterators_make_numpys_blas_single_threaded(data_dir):
  """The crop-resize matmuls run in parallel reader threads and workers: a threaded BLAS
  inside each would oversubscribe the cores (docs/data.md)."""
  config = _config(data_dir, features=("video",), random_crop=True)
  blas_threads = lambda: {info["num_threads"] for info in threadpoolctl.threadpool_info()
                          if info["user_api"] == "blas"}
  with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
    assert blas_threads() == {2}
    next(pipeline.make_train_iterator(config, global_batch_size=4, seed=0,
                                      process_index=0, process_count=1))
    assert blas_threads() == {1}


def test_worker_processes_give_the_in_process_batches(data_dir):
  make = lambda workers: pipeline.make_train_iterator(
      _config(data_dir, features=("video", "tracks"), random_crop=True,
              worker_count=workers), global_batch_size=4, seed=5,
      process_index=0, process_count=1)
  in_process, with_worker = make(0), make(1)
  for _ in range(2):
    want, got = next(in_process), next(with_worker)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
