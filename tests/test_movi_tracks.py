"""MOVi point tracks lifted to 3-D, against golden values and a ray-traced ground truth."""
import numpy as np
import pytest

from videolib.data import movi_testing
from videolib.data import movi_tracks
from videolib.data import scenes

_IDENTITY = np.array([[1.0, 0.0, 0.0, 0.0]])
_FOCAL = movi_testing.FOCAL_LENGTH / movi_testing.SENSOR_WIDTH  # 1.09375


def test_projection_follows_blenders_camera_golden_values():
  # A camera at z = 10 looking down -z; x right, y up, f = 35 / 32, 32 x 32 pixels.
  points = np.array([[[1.0, 2.0, 0.0], [0.0, 0.0, 11.0]]])
  xy, distance, in_front = movi_tracks.project(points, np.array([[0.0, 0.0, 10.0]]),
                                               _IDENTITY, _FOCAL, 32)
  np.testing.assert_allclose(xy[0, 0], [19.5, 9.0])  # 32 (0.5 + f / 10 * (1, -2)).
  np.testing.assert_allclose(distance[0], [np.sqrt(105.0), 1.0])
  assert in_front.tolist() == [[True, False]]
  # Turned 90 degrees about z (w-first quaternion): the camera's x axis is the world's y.
  turned = np.array([[np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)]])
  xy, _, _ = movi_tracks.project(np.array([[[0.0, 1.0, 0.0]]]),
                                 np.array([[0.0, 0.0, 10.0]]), turned, _FOCAL, 32)
  np.testing.assert_allclose(xy[0, 0], [19.5, 16.0])


def test_unproject_inverts_project():
  rng = np.random.default_rng(0)
  yx = rng.integers(0, 64, (100, 2))
  distance = rng.uniform(1.0, 30.0, 100)
  position, quaternion = rng.normal(size=3), rng.normal(size=4)
  world = movi_tracks.unproject(yx, distance, position, quaternion, _FOCAL, 64)
  xy, back, in_front = movi_tracks.project(world[None], position[None], quaternion[None],
                                           _FOCAL, 64)
  np.testing.assert_allclose(xy[0], yx[:, ::-1] + 0.5, atol=1e-9)
  np.testing.assert_allclose(back[0], distance)
  assert in_front.all()


def test_box_to_world_carries_box_coordinates_with_a_rotated_scaled_box():
  rng = np.random.default_rng(1)
  quaternions = rng.normal(size=(5, 4))
  rotations = movi_tracks.rotation_matrices(quaternions)
  edges, centres = rng.uniform(0.5, 2.0, 3), rng.normal(size=(5, 3))
  corners = np.array(list(np.ndindex(2, 2, 2))) - 0.5  # x slowest: Kubric's order.
  bboxes_3d = np.einsum("tij,cj->tci", rotations, corners * edges) + centres[:, None]
  maps = movi_tracks.box_to_world(bboxes_3d)
  local = rng.uniform(-0.5, 0.5, (7, 3))
  world = np.einsum("ni,tij->tnj", local, maps[:, :3]) + maps[:, None, 3]
  want = np.einsum("tij,nj->tni", rotations, local * edges) + centres[:, None]
  np.testing.assert_allclose(world, want, atol=1e-9)


def test_budget_per_segment_is_kubrics_smallest_first_share():
  # Sorted by size: 50 gets min(round(64 / 3), 5) = 5; 200 gets min(round(59 / 2) = 30
  # (half to even), 20) = 20; 1000 gets the remaining 39.
  np.testing.assert_array_equal(movi_tracks.tracks_per_segment(np.array([1000, 50, 200]), 64),
                                [39, 5, 20])
  # Small segments cannot fill the budget: each gives at most a tenth of its points.
  np.testing.assert_array_equal(movi_tracks.tracks_per_segment(np.array([30, 40]), 64), [3, 4])


def test_queries_lie_inside_the_crop_and_favour_objects():
  segmentation = np.zeros((64, 64), int)
  segmentation[10:30, 20:40] = 1  # 400 pixels, 360 of them inside the crop.
  crop = (4, 8, 40, 48)
  on_object = []
  for seed in range(10):
    yx = movi_tracks.sample_queries(segmentation, crop, 64, np.random.default_rng(seed))
    assert len(yx) == len(np.unique(yx, axis=0)) == 64
    assert np.all((yx >= [4, 8]) & (yx < [44, 56]))
    on_object.append(np.sum(segmentation[yx[:, 0], yx[:, 1]] == 1))
  # Smallest first: the object takes half the budget (32 <= its 10 % cap, 36), twice its
  # 19 % share of the crop's area; the background the other half.
  assert on_object == [32] * 10


def _lift(scene: movi_testing.Scene, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Tracks from the scene's layers as MOVi stores them (uint16, float32)."""
  layers = movi_testing.render(scene)
  depth, depth_range = scenes.encode_depth(layers["depth"])
  to_uint16 = lambda unit: np.round(unit * 65535).astype(np.uint16)
  lift = movi_tracks.ClipLayers(
      depth=scenes.decode_depth(depth, depth_range)[..., 0],
      segmentations=layers["segmentations"][..., 0].astype(int),
      object_coordinates=to_uint16(layers["object_coordinates"][0]),
      normals=to_uint16((layers["normal"][0] + 1) / 2),
      bboxes_3d=movi_testing.bboxes_3d(scene).astype(np.float32),
      object_quaternions=movi_testing.box_quaternions(scene).astype(np.float32),
      camera_positions=scene.camera_positions.astype(np.float32),
      camera_quaternions=movi_testing.camera_quaternions(scene).astype(np.float32),
      focal_length=movi_testing.FOCAL_LENGTH, sensor_width=movi_testing.SENSOR_WIDTH)
  return movi_tracks.lift_tracks(lift, queries)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lifted_tracks_match_the_ray_traced_ground_truth(seed):
  scene = movi_testing.sample_scene(seed, size=48, num_frames=12)
  segmentation = movi_testing.render(scene)["segmentations"][0, ..., 0]
  queries = movi_tracks.sample_queries(segmentation, (0, 0, 48, 48), 64,
                                       np.random.default_rng(seed))
  points, occluded = _lift(scene, queries)
  want, visible = movi_testing.true_tracks(scene, queries)
  assert points.shape == (len(queries), 12, 2) and len(queries) >= 48
  on_objects = segmentation[queries[:, 0], queries[:, 1]] > 0
  assert on_objects.sum() >= 3  # The budget favours the boxes.
  np.testing.assert_allclose(points[:, 0], queries[:, ::-1] + 0.5, atol=1e-3)
  assert not occluded[:, 0].any() and visible[:, 0].all()
  # Where a point is truly visible its position is exact (to float32 and uint16 storage).
  np.testing.assert_allclose(points[visible], want[visible], atol=5e-3)
  assert np.max(np.abs(want[on_objects, -1] - want[on_objects, 0])) > 2.0  # They move.
  # Kubric's occlusion rule (depth and segment of the 4 pixels around the point, normals)
  # is a heuristic at pixel scale: it may only disagree within a pixel of an edge.
  in_frame = np.all((want >= 0) & (want < 48), -1)
  agree = (occluded == ~visible) | ~in_frame
  assert np.mean(agree) >= 0.95
  hidden = in_frame & ~visible
  assert hidden.sum() >= 3 and np.mean(occluded[hidden]) >= 0.7


def test_a_face_turning_away_from_the_camera_is_occluded():
  # One point on a face whose normal is +x; the object turns 180 degrees about z.
  yaw = np.array([0.0, np.pi / 4, np.pi])
  rotations = movi_tracks.rotation_matrices(
      np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], -1))
  points = np.einsum("tij,j->ti", rotations, [1.0, 0.0, 0.0])[:, None]
  camera = np.tile([10.0, 0.0, 0.0], (3, 1))
  away = movi_tracks.faces_away(np.array([[1.0, 0.0, 0.0]]), rotations, points, camera)
  assert away[:, 0].tolist() == [False, False, True]
  # A query that already faces away (a mesh defect, for Kubric) is never flagged.
  assert not movi_tracks.faces_away(np.array([[-1.0, 0.0, 0.0]]), rotations, points,
                                    camera).any()


def test_segment_without_an_instance_is_refused():
  scene = movi_testing.sample_scene(0, size=32, num_frames=4)
  layers = movi_testing.render(scene)
  ids = layers["segmentations"][0, ..., 0]
  queries = np.argwhere(ids == ids.max())[:1]
  lift = movi_tracks.ClipLayers(
      depth=layers["depth"][..., 0], segmentations=ids[None].repeat(4, 0).astype(int),
      object_coordinates=np.zeros((32, 32, 3), np.uint16),
      normals=np.zeros((32, 32, 3), np.uint16), bboxes_3d=np.zeros((0, 4, 8, 3)),
      object_quaternions=np.zeros((0, 4, 4)), camera_positions=scene.camera_positions,
      camera_quaternions=movi_testing.camera_quaternions(scene),
      focal_length=35.0, sensor_width=32.0)
  with pytest.raises(ValueError, match="has no instance"):
    movi_tracks.lift_tracks(lift, queries)
