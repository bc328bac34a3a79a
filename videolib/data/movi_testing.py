r"""A local stand-in for Kubric MOVi-E: ray-traced videos with MOVi-E's exact feature spec.

Kubric renders MOVi with Blender and the real data lives in a bucket this project cannot
always reach. This module renders the same layers, with the same encodings and feature spec
(kubric `challenges/movi/movi_e.py`), for a scene simple enough to ray-trace in numpy: a floor
(the background, segment 0) and boxes that slide and spin on it, seen by a camera that
circles the scene while looking at it. It serves three uses:

  * tests of the MOVi reader and of the point-track lift (`movi_tracks.py`): `true_tracks`
    gives exact tracks and visibility by casting rays, from a camera built from its look-at
    basis (its quaternion derived from that basis by scipy), so the lift is checked against
    geometry it does not share;
  * benchmarks of the MOVi input path (`benchmarks/data_throughput.py`);
  * smoke runs of MOVi configs without the real data:

      python -m videolib.data.write_movi_testing --data_dir=D --size=128 --num_train=64
      python -m moog.main --config=configs/moog_readout_movi.py --config.data.data_dir=D ...

    writes `D/movi_e/128x128/1.0.0`, read exactly like the real `movi_e/128x128`.

What it does not imitate: textures, lighting, motion blur, physics, the 10-23 objects of
real MOVi-E, instance sorting by visibility, forward/backward flow (stored as zeros) and the
background's object coordinates (zeros).
"""
import dataclasses
import itertools

from etils import epath
import numpy as np
from scipy.spatial.transform import Rotation
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import py_utils

from videolib.data import scenes

FOCAL_LENGTH, SENSOR_WIDTH = 35.0, 32.0  # MOVi's camera (field of view 0.8576 rad).
_FOCAL = FOCAL_LENGTH / SENSOR_WIDTH
_CORNERS = np.array(list(itertools.product([-0.5, 0.5], repeat=3)))
_PALETTE = np.array([[90, 90, 90], [220, 60, 40], [40, 160, 220], [240, 200, 40],
                     [90, 200, 90]], np.uint8)


@dataclasses.dataclass(frozen=True)
class Scene:
  """A camera path and boxes on the floor z = 0, per frame (T frames, K boxes)."""
  size: int  # Square frames, pixels.
  camera_positions: np.ndarray  # [T, 3]
  camera_axes: np.ndarray  # [T, 3, 3]: columns are the camera's x, y, z in the world.
  box_centres: np.ndarray  # [K, T, 3]
  box_yaws: np.ndarray  # [K, T] rotation about the world z axis.
  box_sizes: np.ndarray  # [K, 3] edge lengths.

  @property
  def box_rotations(self) -> np.ndarray:  # [K, T, 3, 3]
    return Rotation.from_euler("z", self.box_yaws.reshape(-1, 1)).as_matrix().reshape(
        self.box_yaws.shape + (3, 3))


def sample_scene(seed: int, size: int, num_frames: int, num_boxes: int = 3) -> Scene:
  """A camera circling the origin and boxes that cross each other's lines of sight."""
  rng = np.random.default_rng(seed)
  times = np.arange(num_frames)
  angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * 0.02 * times
  positions = np.stack([7 * np.cos(angle), 7 * np.sin(angle), np.full(num_frames, 5.0)], -1)
  forward = np.array([0.0, 0.0, 0.5]) - positions
  forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
  right = np.cross(forward, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right, axis=-1, keepdims=True)
  back = -forward
  up = np.cross(back, right)
  sizes = rng.uniform(0.8, 1.8, (num_boxes, 3))
  start = rng.uniform(-2.0, 2.0, (num_boxes, 2))
  velocity = rng.uniform(-0.12, 0.12, (num_boxes, 2))
  xy = start[:, None] + velocity[:, None] * times[None, :, None]
  centres = np.concatenate(
      [xy, np.broadcast_to(sizes[:, None, 2:] / 2, (num_boxes, num_frames, 1))], -1)
  yaws = rng.uniform(0, 2 * np.pi, (num_boxes, 1)) + rng.uniform(
      -0.15, 0.15, (num_boxes, 1)) * times
  return Scene(size=size, camera_positions=positions,
               camera_axes=np.stack([right, up, back], -1), box_centres=centres,
               box_yaws=yaws, box_sizes=sizes)


def camera_quaternions(scene: Scene) -> np.ndarray:
  """[T, 4] w-first, as MOVi stores them."""
  return Rotation.from_matrix(scene.camera_axes).as_quat(scalar_first=True)


def pixel_rays(scene: Scene, frame: int, xy: np.ndarray) -> np.ndarray:
  """Unit world directions [N, 3] through raster positions xy [N, 2] of `frame`."""
  normalised = xy / scene.size - 0.5
  axes = scene.camera_axes[frame]
  rays = (normalised[:, :1] / _FOCAL * axes[:, 0] - normalised[:, 1:] / _FOCAL * axes[:, 1]
          - axes[:, 2])
  return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def cast(scene: Scene, frame: int, origin: np.ndarray, rays: np.ndarray):
  """First hits of rays [N, 3] from `origin` at `frame`.

  Returns:
    distance [N], segment [N] (0 = floor, k + 1 = box k), box-local position [N, 3] in
    [-0.5, 0.5] (0 on the floor) and world normal [N, 3].
  """
  n = len(rays)
  distance = -origin[2] / np.minimum(rays[:, 2], -1e-9)  # The floor z = 0.
  segment = np.zeros(n, int)
  local = np.zeros((n, 3))
  normal = np.tile([0.0, 0.0, 1.0], (n, 1))
  rotations = scene.box_rotations[:, frame]
  for k, (centre, rotation, edges) in enumerate(zip(
      scene.box_centres[:, frame], rotations, scene.box_sizes)):
    start = (origin - centre) @ rotation / edges
    direction = rays @ rotation / edges
    with np.errstate(divide="ignore", invalid="ignore"):
      near = (-0.5 - start) / direction
      far = (0.5 - start) / direction
    enter = np.minimum(near, far)
    t_in, t_out = enter.max(-1), np.maximum(near, far).min(-1)
    hit = (t_in <= t_out) & (t_in > 0) & (t_in < distance)
    axis = enter.argmax(-1)
    distance = np.where(hit, t_in, distance)
    segment = np.where(hit, k + 1, segment)
    local = np.where(hit[:, None], start + t_in[:, None] * direction, local)
    face = -np.sign(direction[np.arange(n), axis])[:, None] * np.eye(3)[axis]
    normal = np.where(hit[:, None], face @ rotation.T, normal)
  return distance, segment, np.clip(local, -0.5, 0.5), normal


def render(scene: Scene) -> dict:
  """The MOVi layers of every frame, decoded (metric depth, unit normals)."""
  size, num_frames = scene.size, len(scene.camera_positions)
  grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="xy"), -1)
  centres = grid.reshape(-1, 2) + 0.5
  layers = {key: [] for key in ("video", "segmentations", "depth", "normal",
                                "object_coordinates")}
  for t in range(num_frames):
    rays = pixel_rays(scene, t, centres)
    distance, segment, local, normal = cast(scene, t, scene.camera_positions[t], rays)
    world = scene.camera_positions[t] + distance[:, None] * rays
    pattern = np.where(segment > 0, np.floor(local[:, 0] * 4) + np.floor(local[:, 1] * 4),
                       np.floor(world[:, 0]) + np.floor(world[:, 1])) % 2
    colour = _PALETTE[segment % len(_PALETTE)] * (0.6 + 0.4 * pattern[:, None])
    shape = (size, size)
    layers["video"].append(colour.astype(np.uint8).reshape(shape + (3,)))
    layers["segmentations"].append(segment.astype(np.uint8).reshape(shape + (1,)))
    layers["depth"].append(distance.astype(np.float32).reshape(shape + (1,)))
    layers["normal"].append(normal.reshape(shape + (3,)))
    layers["object_coordinates"].append(
        np.where(segment[:, None] > 0, local + 0.5, 0.0).reshape(shape + (3,)))
  return {key: np.stack(value) for key, value in layers.items()}


def bboxes_3d(scene: Scene) -> np.ndarray:
  """[K, T, 8, 3] world corners in Kubric's corner order."""
  corners = _CORNERS * scene.box_sizes[:, None]  # [K, 8, 3]
  return np.einsum("ktij,kcj->ktci", scene.box_rotations, corners) + (
      scene.box_centres[:, :, None])


def box_quaternions(scene: Scene) -> np.ndarray:
  """[K, T, 4] w-first."""
  return np.stack([np.cos(scene.box_yaws / 2), np.zeros_like(scene.box_yaws),
                   np.zeros_like(scene.box_yaws), np.sin(scene.box_yaws / 2)], -1)


def true_tracks(scene: Scene, queries: np.ndarray):
  """Exact tracks of query pixels (integer (y, x) on frame 0) through every frame.

  Returns:
    xy [N, T, 2] raster positions and visible [N, T]: in front of the camera, inside the
    frame, and the first surface its camera ray meets (to 1e-4 of the distance).
  """
  centres = queries[:, ::-1] + 0.5
  distance, segment, local, _ = cast(scene, 0, scene.camera_positions[0],
                                     pixel_rays(scene, 0, centres))
  origin = scene.camera_positions[0] + distance[:, None] * pixel_rays(scene, 0, centres)
  num_frames = len(scene.camera_positions)
  rotations = scene.box_rotations
  xy = np.zeros((len(queries), num_frames, 2))
  visible = np.zeros((len(queries), num_frames), bool)
  for t in range(num_frames):
    points = origin.copy()
    on_box = segment > 0
    k = segment[on_box] - 1
    points[on_box] = scene.box_centres[k, t] + np.einsum(
        "nij,nj->ni", rotations[k, t], local[on_box] * scene.box_sizes[k])
    relative = points - scene.camera_positions[t]
    in_camera = relative @ scene.camera_axes[t]
    ahead = -in_camera[:, 2]
    xy[:, t] = (0.5 + _FOCAL * in_camera[:, :2] / ahead[:, None] * [1, -1]) * scene.size
    length = np.linalg.norm(relative, axis=-1)
    first, *_ = cast(scene, t, scene.camera_positions[t], relative / length[:, None])
    visible[:, t] = ((ahead > 0) & np.all((xy[:, t] >= 0) & (xy[:, t] < scene.size), -1)
                     & (np.abs(first - length) < 1e-4 * length))
  return xy, visible


def boxes_2d(scene: Scene, layers: dict | None = None):
  """Per instance: its 2-D boxes [n, 4] and the frames [n] they are on, as MOVi stores them.

  Boxes are [ymin, xmin, ymax, xmax] / size of the instance's pixels; `layers` are
  `render(scene)`, rendered here if not given.
  """
  segmentations = (layers or render(scene))["segmentations"][..., 0]
  boxes, frames = [], []
  for k in range(len(scene.box_sizes)):
    mask = segmentations == k + 1
    shown = np.flatnonzero(mask.any((1, 2)))
    frames.append(shown.astype(np.int32))
    boxes.append([])
    for t in shown:
      ys, xs = np.nonzero(mask[t])
      boxes[-1].append(
          np.float32([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]) / scene.size)
  return boxes, frames


def example(seed: int, size: int, num_frames: int = 24) -> dict:
  """One MOVi-E-layout example: the encoded layers of `sample_scene(seed, ...)`."""
  scene = sample_scene(seed, size, num_frames)
  layers = render(scene)
  depth, depth_range = scenes.encode_depth(layers["depth"])
  to_uint16 = lambda unit: np.round(unit * 65535).astype(np.uint16)
  boxes, box_frames = boxes_2d(scene, layers)
  corners, quaternions = bboxes_3d(scene), box_quaternions(scene)
  zeros = lambda *shape: np.zeros(shape, np.float32)
  instances = [{
      "mass": 1.0, "friction": 0.5, "restitution": 0.5,
      "positions": scene.box_centres[i].astype(np.float32),
      "quaternions": quaternions[i].astype(np.float32),
      "velocities": zeros(num_frames, 3), "angular_velocities": zeros(num_frames, 3),
      "bboxes_3d": corners[i].astype(np.float32),
      "image_positions": zeros(num_frames, 2),
      "bboxes": [tfds.features.BBox(*b) for b in boxes[i]],
      "bbox_frames": box_frames[i],
      "visibility": np.sum(layers["segmentations"] == i + 1, (1, 2, 3)).astype(np.uint16),
      "asset_id": f"box_{i}", "category": i, "scale": 1.0, "is_dynamic": True,
  } for i in range(len(scene.box_sizes))]
  flow = np.zeros((num_frames, size, size, 2), np.uint16)
  return {
      "metadata": {"video_name": f"movi_{seed}", "width": size, "height": size,
                   "num_frames": num_frames, "num_instances": len(instances),
                   "depth_range": depth_range,
                   "forward_flow_range": np.float32([-1, 1]),
                   "backward_flow_range": np.float32([-1, 1])},
      "background": "floor",
      "instances": instances,
      "camera": {"focal_length": FOCAL_LENGTH, "sensor_width": SENSOR_WIDTH,
                 "field_of_view": 2 * np.arctan(SENSOR_WIDTH / 2 / FOCAL_LENGTH),
                 "positions": scene.camera_positions.astype(np.float32),
                 "quaternions": camera_quaternions(scene).astype(np.float32)},
      "events": {"collisions": []},
      "video": layers["video"],
      "segmentations": layers["segmentations"],
      "forward_flow": flow,
      "backward_flow": flow,
      "depth": depth,
      "normal": to_uint16((layers["normal"] + 1) / 2),
      "object_coordinates": to_uint16(layers["object_coordinates"]),
  }


def seed_of(video_name: bytes | str) -> int:
  """The seed `example` rendered a video from, read back from its `video_name`."""
  name = video_name.decode() if isinstance(video_name, bytes) else video_name
  return int(name.split("_")[1])


def _instance_features(num_frames: int) -> dict:
  """kubric challenges/movi/movi_e.py: get_instance_features + MOVi-E's fields."""
  tensor = lambda *shape, dtype=np.float32: tfds.features.Tensor(shape=shape, dtype=dtype)
  return {
      "mass": np.float32, "friction": np.float32, "restitution": np.float32,
      "positions": tensor(num_frames, 3), "quaternions": tensor(num_frames, 4),
      "velocities": tensor(num_frames, 3), "angular_velocities": tensor(num_frames, 3),
      "bboxes_3d": tensor(num_frames, 8, 3), "image_positions": tensor(num_frames, 2),
      "bboxes": tfds.features.Sequence(tfds.features.BBoxFeature()),
      "bbox_frames": tfds.features.Sequence(tensor(dtype=np.int32)),
      "visibility": tensor(num_frames, dtype=np.uint16),
      "asset_id": tfds.features.Text(),
      "category": tfds.features.ClassLabel(num_classes=17),
      "scale": np.float32,
      "is_dynamic": np.bool_,
  }


@dataclasses.dataclass
class MoviTestingConfig(tfds.core.BuilderConfig):
  size: int = 32
  num_train: int = 3
  num_validation: int = 3


class MoviE(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MOVi-E's FeaturesDict, filled with ray-traced scenes (`example`)."""

  VERSION = tfds.core.Version("1.0.0")
  NUM_FRAMES = 24  # Every MOVi variant.

  @py_utils.classproperty
  @classmethod
  def code_path(cls):
    return epath.Path(__file__)

  def _info(self):
    t, size = self.NUM_FRAMES, self.builder_config.size
    frames = lambda channels, dtype: tfds.features.Sequence(
        tfds.features.Image(shape=(size, size, channels), dtype=dtype), length=t)
    uint16_layer = lambda channels: tfds.features.Sequence(
        tfds.features.Tensor(shape=(size, size, channels), dtype=np.uint16), length=t)
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
        "instances": tfds.features.Sequence(feature=_instance_features(t)),
        "camera": {
            "focal_length": np.float32, "sensor_width": np.float32,
            "field_of_view": np.float32,
            "positions": tfds.features.Tensor(shape=(t, 3), dtype=np.float32),
            "quaternions": tfds.features.Tensor(shape=(t, 4), dtype=np.float32),
        },
        "events": {"collisions": tfds.features.Sequence({
            "instances": tfds.features.Tensor(shape=(2,), dtype=np.uint16),
            "frame": np.int32, "force": np.float32,
            "position": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "image_position": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "contact_normal": tfds.features.Tensor(shape=(3,), dtype=np.float32),
        })},
        "video": tfds.features.Video(shape=(t, size, size, 3)),
        "segmentations": frames(1, np.uint8),
        "forward_flow": uint16_layer(2),
        "backward_flow": uint16_layer(2),
        "depth": frames(1, np.uint16),
        "normal": tfds.features.Video(shape=(t, size, size, 3), dtype=np.uint16),
        "object_coordinates": tfds.features.Video(shape=(t, size, size, 3),
                                                  dtype=np.uint16),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    config = self.builder_config
    return {"train": self._generate_examples(0, config.num_train),
            "validation": self._generate_examples(1, config.num_validation)}

  def _generate_examples(self, split: int, num_examples: int):
    for index in range(num_examples):
      seed = split * 100_000 + index
      yield index, example(seed, self.builder_config.size, self.NUM_FRAMES)


def write(data_dir: str, size: int, num_train: int = 3, num_validation: int = 3) -> str:
  """Writes `<data_dir>/movi_e/<size>x<size>/1.0.0` (ArrayRecord); returns the dataset name."""
  name = f"{size}x{size}"
  MoviE(config=MoviTestingConfig(name=name, size=size, num_train=num_train,
                                 num_validation=num_validation),
        data_dir=data_dir, file_format="array_record").download_and_prepare()
  return f"movi_e/{name}"
