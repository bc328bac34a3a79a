"""The MOVi reader on a tiny local dataset with MOVi-E's exact feature spec."""
from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import py_utils

from videolib.data import movi
from videolib.data import pipeline
from videolib.data import scenes

_S, _H, _W = 24, 16, 16
_NUM_EXAMPLES = 3


def _instance_features():
  """kubric challenges/movi/movi_e.py: get_instance_features + MOVi-E fields."""
  return {
      "mass": np.float32, "friction": np.float32, "restitution": np.float32,
      "positions": tfds.features.Tensor(shape=(_S, 3), dtype=np.float32),
      "quaternions": tfds.features.Tensor(shape=(_S, 4), dtype=np.float32),
      "velocities": tfds.features.Tensor(shape=(_S, 3), dtype=np.float32),
      "angular_velocities": tfds.features.Tensor(shape=(_S, 3), dtype=np.float32),
      "bboxes_3d": tfds.features.Tensor(shape=(_S, 8, 3), dtype=np.float32),
      "image_positions": tfds.features.Tensor(shape=(_S, 2), dtype=np.float32),
      "bboxes": tfds.features.Sequence(tfds.features.BBoxFeature()),
      "bbox_frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.int32)),
      "visibility": tfds.features.Tensor(shape=(_S,), dtype=np.uint16),
      "asset_id": tfds.features.Text(),
      "category": tfds.features.ClassLabel(num_classes=17),
      "scale": np.float32,
      "is_dynamic": np.bool_,
  }


class MoviE(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MOVi-E's FeaturesDict (kubric challenges/movi/movi_e.py) at 16x16."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f"{_H}x{_W}")]

  @py_utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _info(self):
    uint16_layer = lambda c: tfds.features.Sequence(
        tfds.features.Tensor(shape=(_H, _W, c), dtype=np.uint16), length=_S)
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "metadata": {
            "video_name": tfds.features.Text(),
            "width": np.int32, "height": np.int32, "num_frames": np.int32,
            "num_instances": np.uint16,
            "depth_range": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "forward_flow_range": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "backward_flow_range": tfds.features.Tensor(shape=(2,), dtype=np.float32),
        },
        "background": tfds.features.Text(),
        "instances": tfds.features.Sequence(feature=_instance_features()),
        "camera": {
            "focal_length": np.float32, "sensor_width": np.float32,
            "field_of_view": np.float32,
            "positions": tfds.features.Tensor(shape=(_S, 3), dtype=np.float32),
            "quaternions": tfds.features.Tensor(shape=(_S, 4), dtype=np.float32),
        },
        "events": {"collisions": tfds.features.Sequence({
            "instances": tfds.features.Tensor(shape=(2,), dtype=np.uint16),
            "frame": np.int32, "force": np.float32,
            "position": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "image_position": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "contact_normal": tfds.features.Tensor(shape=(3,), dtype=np.float32),
        })},
        "video": tfds.features.Video(shape=(_S, _H, _W, 3)),
        "segmentations": tfds.features.Sequence(
            tfds.features.Image(shape=(_H, _W, 1), dtype=np.uint8), length=_S),
        "forward_flow": uint16_layer(2),
        "backward_flow": uint16_layer(2),
        "depth": tfds.features.Sequence(
            tfds.features.Image(shape=(_H, _W, 1), dtype=np.uint16), length=_S),
        "normal": tfds.features.Video(shape=(_S, _H, _W, 3), dtype=np.uint16),
        "object_coordinates": tfds.features.Video(shape=(_S, _H, _W, 3), dtype=np.uint16),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0), "validation": self._generate_examples(1)}

  def _generate_examples(self, split):
    for index in range(_NUM_EXAMPLES):
      yield index, movi_example(split * 100 + index)


def _scene(seed: int) -> dict:
  return scenes.generate(scenes.SceneConfig(height=_H, width=_W, num_frames=_S,
                                            num_tracks=1), [seed])


def movi_example(seed: int) -> dict:
  """A MOVi-E-layout example whose pixels and boxes come from `_scene(seed)`."""
  ex = _scene(seed)
  depth, depth_range = scenes.encode_depth(ex["depth"])
  k = ex["num_instances"]
  rng = np.random.default_rng(seed)
  instances = []
  for i in range(k):
    frames = np.flatnonzero(ex["instances/bbox_frames"][i])
    instances.append({
        "mass": 1.0, "friction": 0.5, "restitution": 0.5,
        "positions": rng.normal(size=(_S, 3)).astype(np.float32),
        "quaternions": np.tile(np.float32([1, 0, 0, 0]), (_S, 1)),
        "velocities": np.zeros((_S, 3), np.float32),
        "angular_velocities": np.zeros((_S, 3), np.float32),
        "bboxes_3d": np.zeros((_S, 8, 3), np.float32),
        "image_positions": ex["instances/image_positions"][i],
        "bboxes": [tfds.features.BBox(*b) for b in ex["instances/bboxes"][i, frames]],
        "bbox_frames": frames.astype(np.int32),
        "visibility": ex["instances/visibility"][i],
        "asset_id": f"asset_{i}", "category": i, "scale": 1.0, "is_dynamic": i == 0,
    })
  layer = lambda c: rng.integers(0, 65535, (_S, _H, _W, c), dtype=np.uint16)
  return {
      "metadata": {"video_name": f"movi_{seed}", "width": _W, "height": _H,
                   "num_frames": _S, "num_instances": k, "depth_range": depth_range,
                   "forward_flow_range": np.float32([-1, 1]),
                   "backward_flow_range": np.float32([-1, 1])},
      "background": "hdri",
      "instances": instances,
      "camera": {"focal_length": 35.0, "sensor_width": 32.0, "field_of_view": 0.8576,
                 "positions": np.zeros((_S, 3), np.float32),
                 "quaternions": np.tile(np.float32([1, 0, 0, 0]), (_S, 1))},
      "events": {"collisions": [{
          "instances": np.uint16([1, 65535]), "frame": 3, "force": 1.0,
          "position": np.zeros(3, np.float32), "image_position": np.zeros(2, np.float32),
          "contact_normal": np.float32([0, 0, 1])}]},
      "video": ex["video"],
      "segmentations": ex["segmentations"],
      "forward_flow": layer(2),
      "backward_flow": layer(2),
      "depth": depth,
      "normal": layer(3),
      "object_coordinates": layer(3),
  }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("movi")
  MoviE(data_dir=str(root), file_format="array_record").download_and_prepare()
  return str(root)


def _config(data_dir, **overrides):
  config = pipeline.default_data_config()
  config.update(name=f"movi_e/{_H}x{_W}", data_dir=data_dir, num_frames=8,
                frame_stride=3, resolution=16, random_crop=False, max_instances=23,
                features=("video", "depth", "segmentations", "boxes"))
  config.update(overrides)
  return config


def test_reader_rebuilds_the_builder_from_the_stored_files(data_dir):
  builder = movi.load_builder(f"movi_e/{_H}x{_W}", data_dir)
  assert type(builder).__name__ == "ReadOnlyBuilder"
  assert builder.info.splits["validation"].num_examples == _NUM_EXAMPLES
  record = movi.data_source(builder, "validation")[0]
  assert record["depth"].dtype == np.uint16 and record["depth"].shape == (_S, _H, _W, 1)
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
    seed = int(source[b]["metadata"]["video_name"].decode().split("_")[1])
    want = _scene(seed)
    np.testing.assert_allclose(batch["video"][b], want["video"][frames] / 255, atol=1e-6)
    np.testing.assert_array_equal(batch["segmentations"][b], want["segmentations"][frames])
    depth_step = np.ptp(want["depth"]) / 65535
    np.testing.assert_allclose(batch["depth"][b], want["depth"][frames],
                               atol=depth_step + 1e-5)
    boxes = want["instances/bboxes"][:, frames].transpose(1, 0, 2)
    valid = want["instances/bbox_frames"][:, frames].T
    k = want["num_instances"]
    np.testing.assert_array_equal(batch["boxes_valid"][b, :, :k], valid)
    assert not batch["boxes_valid"][b, :, k:].any()
    np.testing.assert_allclose(batch["boxes"][b, :, :k], boxes, atol=1e-6)


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


def test_movi_tracks_and_labels_are_refused_up_front(data_dir):
  with pytest.raises(NotImplementedError, match="3-D lifting"):
    pipeline.batch_spec(_config(data_dir, features=("video", "tracks")), 4, train=True)
  with pytest.raises(ValueError, match="no motion class label"):
    pipeline.batch_spec(_config(data_dir, features=("label",)), 4, train=True)
  with pytest.raises(ValueError, match="Unknown MOVi dataset 'movi_g/128x128'|Unknown dataset"):
    pipeline.batch_spec(_config(data_dir, name="movi_g/128x128"), 4, train=True)
