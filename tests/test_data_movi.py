"""The MOVi reader and point-track lift on local data with MOVi-E's exact feature spec.

The data is `movi_testing`'s ray-traced stand-in, whose scenes give exact ground truth.
"""
import numpy as np
import pytest

from videolib.data import movi
from videolib.data import movi_testing
from videolib.data import pipeline

_S, _SIZE = 24, 32
_NUM_EXAMPLES = 3


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("movi"))
  movi_testing.write(root, _SIZE, num_train=_NUM_EXAMPLES, num_validation=_NUM_EXAMPLES)
  return root


def _scene(source, index: int) -> movi_testing.Scene:
  """The ray-traced scene behind record `index` of `source`."""
  seed = movi_testing.seed_of(source[index]["metadata"]["video_name"])
  return movi_testing.sample_scene(seed, _SIZE, _S)


def _config(data_dir, **overrides):
  config = pipeline.default_data_config()
  config.update(name=f"movi_e/{_SIZE}x{_SIZE}", data_dir=data_dir, num_frames=8,
                frame_stride=3, resolution=_SIZE, random_crop=False, max_instances=23,
                features=("video", "depth", "segmentations", "boxes"))
  config.update(overrides)
  return config


def test_reader_rebuilds_the_builder_from_the_stored_files(data_dir):
  builder = movi.load_builder(f"movi_e/{_SIZE}x{_SIZE}", data_dir)
  assert type(builder).__name__ == "ReadOnlyBuilder"
  assert builder.info.splits["validation"].num_examples == _NUM_EXAMPLES
  record = movi.data_source(builder, "validation")[0]
  assert record["depth"].dtype == np.uint16 and record["depth"].shape == (_S, _SIZE, _SIZE, 1)
  assert record["camera"]["quaternions"].shape == (_S, 4)


def test_pipeline_reads_movi_with_its_encodings(data_dir):
  config = _config(data_dir)
  batches = list(pipeline.make_eval_iterator(config, global_batch_size=4,
                                             process_index=0, process_count=1))
  assert len(batches) == 1
  batch = batches[0]
  assert batch["_mask"].tolist() == [True] * _NUM_EXAMPLES + [False]
  frames = np.arange(8) * 3
  source = movi.data_source(movi.load_builder(config.name, data_dir), "validation")
  for b in range(_NUM_EXAMPLES):
    scene = _scene(source, b)
    want = movi_testing.render(scene)
    np.testing.assert_allclose(batch["video"][b], want["video"][frames] / 255, atol=1e-6)
    np.testing.assert_array_equal(batch["segmentations"][b], want["segmentations"][frames])
    depth_step = np.ptp(want["depth"]) / 65535
    np.testing.assert_allclose(batch["depth"][b], want["depth"][frames],
                               atol=depth_step + 1e-5)
    k = len(scene.box_sizes)
    boxes, box_frames = movi_testing.boxes_2d(scene, want)
    for t, frame in enumerate(frames):
      for i in range(k):
        shown = frame in box_frames[i]
        assert batch["boxes_valid"][b, t, i] == shown
        if shown:
          np.testing.assert_allclose(batch["boxes"][b, t, i],
                                     boxes[i][list(box_frames[i]).index(frame)], atol=1e-6)
    assert not batch["boxes_valid"][b, :, k:].any()


def test_random_crop_transforms_boxes_into_the_crop(data_dir):
  config = _config(data_dir, random_crop=True, resolution=12, num_frames=4, frame_stride=1)
  batch = next(pipeline.make_train_iterator(config, global_batch_size=2, seed=0,
                                            process_index=0, process_count=1))
  assert batch["video"].shape == (2, 4, 12, 12, 3)
  seg = batch["segmentations"][..., 0]
  for b, t, k in zip(*np.nonzero(batch["boxes_valid"])):
    ymin, xmin, ymax, xmax = batch["boxes"][b, t, k] * 12
    ys, xs = np.nonzero(seg[b, t] == k + 1)
    if len(ys):  # The object's pixels (nearest-resized) lie in its box +- 1 px.
      assert ymin - 1 <= ys.min() and ys.max() + 1 <= ymax + 1
      assert xmin - 1 <= xs.min() and xs.max() + 1 <= xmax + 1


def test_missing_dataset_names_path_and_copy_command(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    movi.load_builder("movi_e/128x128", str(tmp_path))
  message = str(error.value)
  assert "'movi_e/128x128'" in message and f"{tmp_path}/movi_e/128x128/1.0.0" in message
  assert (f"gsutil -m cp -r gs://kubric-public/grain/movi_e/128x128/1.0.0 "
          f"{tmp_path}/movi_e/128x128/") in message
  assert "tfds convert_format" in message


def test_pipeline_lifts_point_tracks_from_movi_layers(data_dir):
  config = _config(data_dir, features=("video", "tracks"), num_tracks=48)
  first, again = (next(pipeline.make_eval_iterator(config, global_batch_size=4,
                                                   process_index=0, process_count=1))
                  for _ in range(2))
  for key in ("query_points", "target_points", "occluded", "tracks_valid"):
    np.testing.assert_array_equal(first[key], again[key])  # Eval queries are fixed.
  frames = np.arange(8) * 3
  source = movi.data_source(movi.load_builder(config.name, data_dir), "validation")
  for b in range(_NUM_EXAMPLES):
    valid = first["tracks_valid"][b]
    assert valid.sum() >= 40  # 48 wanted; 10 % caps can leave a few unfilled.
    query = first["query_points"][b, valid]
    target = first["target_points"][b, valid]
    np.testing.assert_array_equal(query[:, 0], 0)
    np.testing.assert_allclose(query[:, 1:], target[:, 0, ::-1])
    assert not first["occluded"][b, valid, 0].any()
    scene = _scene(source, b)
    want, visible = movi_testing.true_tracks(scene, np.round(query[:, 1:] - 0.5).astype(int))
    want, visible = want[:, frames], visible[:, frames]
    np.testing.assert_allclose(target[visible], want[visible], atol=5e-3)
    assert np.mean(first["occluded"][b, valid] == ~visible) >= 0.9


def test_random_crop_keeps_lifted_tracks_in_the_crop(data_dir):
  config = _config(data_dir, random_crop=True, resolution=16, num_frames=4,
                   features=("video", "tracks"), num_tracks=32)
  batch = next(pipeline.make_train_iterator(config, global_batch_size=3, seed=0,
                                            process_index=0, process_count=1))
  valid = batch["tracks_valid"]
  assert valid.sum(1).min() >= 16
  queries = batch["query_points"][valid]
  assert np.all((queries[:, 1:] >= 0) & (queries[:, 1:] < 16))
  assert not batch["occluded"][valid][:, 0].any()
  # The same draw with segmentations: a visible point stays on its own segment.
  seg = next(pipeline.make_train_iterator(
      _config(data_dir, random_crop=True, resolution=16, num_frames=4,
              features=("segmentations", "tracks"), num_tracks=32),
      global_batch_size=3, seed=0, process_index=0, process_count=1))
  np.testing.assert_array_equal(seg["target_points"], batch["target_points"])
  b, n, t = np.nonzero(valid[..., None] & ~batch["occluded"])
  pixel = np.floor(batch["target_points"][b, n, t]).astype(int)
  segment = seg["segmentations"][b, t, pixel[:, 1], pixel[:, 0], 0]
  start = np.floor(batch["target_points"][b, n, 0]).astype(int)
  assert np.mean(segment == seg["segmentations"][b, 0, start[:, 1], start[:, 0], 0]) >= 0.9


def test_movi_labels_and_non_square_tracks_are_refused_up_front(data_dir):
  with pytest.raises(ValueError, match="need square frames"):
    pipeline.batch_spec(_config(data_dir, name="movi_e/32x16", resolution=8,
                                features=("video", "tracks")), 4)
  with pytest.raises(ValueError, match="no motion class label"):
    pipeline.batch_spec(_config(data_dir, features=("label",)), 4)
  with pytest.raises(ValueError, match="Unknown MOVi dataset 'movi_g/128x128'|Unknown dataset"):
    pipeline.batch_spec(_config(data_dir, name="movi_g/128x128"), 4)


def test_corrupt_object_coordinates_name_the_record(data_dir):
  config = _config(data_dir, features=("video", "tracks"))
  source = pipeline._CheckedSource(movi.load_builder(config.name, data_dir), "validation",
                                   config.features, pipeline.validate_config(config))
  record = source[1]
  record["object_coordinates"][0] = b"not a png"
  with pytest.raises(ValueError, match=r"validation\[1\].*frame 0 of object_coordinates"):
    pipeline.preprocess(record, config, pipeline.validate_config(config), rng=None)


@pytest.mark.parametrize("key, corrupt, message", [
    ("camera_positions", lambda a: np.where(a == a[0, 0], np.nan, a),
     "camera_positions contains NaN"),
    ("bboxes_3d", lambda a: a[:, :-1],
     r"bboxes_3d has shape \(3, 23, 8, 3\), expected \('K', 24, 8, 3\)"),
    ("focal_length", lambda a: 0.0, "focal_length 0.0 and sensor_width 32.0 must be positive"),
])
def test_malformed_camera_and_box_arrays_name_the_record(data_dir, key, corrupt, message):
  config = _config(data_dir, features=("video", "tracks"))
  stored = pipeline.validate_config(config)
  source = pipeline._CheckedSource(movi.load_builder(config.name, data_dir), "validation",
                                   config.features, stored)
  record = source[2]
  record[key] = corrupt(record[key])
  with pytest.raises(ValueError, match=r"validation\[2\].*" + message):
    pipeline._check_record(record, "validation", 2, stored)
