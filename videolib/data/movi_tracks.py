"""Point tracks for Kubric MOVi, lifted to 3-D and projected as TAP-Vid-Kubric does.

MOVi's records hold no point tracks. TAP-Vid-Kubric derives them (kubric
`challenges/point_tracking/dataset.py`, summarised in `docs/evaluation_reference.md` §5.4) from
layers every MOVi record holds; this module does the same in numpy, with Kubric's conventions:

  * Camera: Blender's, looking down its -z axis with +y up. Its world matrix comes from the
    per-frame position and w-first quaternion. The normalised focal length is
    `focal_length / sensor_width` on both axes (every MOVi variant has square frames; others
    are refused), the principal point is the frame centre, and pixel positions are raster
    coordinates (the centre of pixel (y, x) is (x + 0.5, y + 0.5)).
  * Depth is the Euclidean distance from the camera centre (metric after `depth_range`).
  * Objects: a query pixel's `object_coordinates` (its position in the object's 3-D bounding
    box, [0, 1] after / 65535) minus 0.5 are carried to the world at every frame by the affine
    map that takes the canonical box corners (in `itertools.product([-.5, .5], repeat=3)`
    order) to `instances.bboxes_3d[t]`, fitted by least squares. The point moves rigidly
    with its object.
  * Background (segment 0): the query pixel's ray, as long as its depth, static in the world.
  * A point is occluded at frame t if any of these holds:
      - it is behind the camera;
      - the rendered depth, the largest over the 4 pixels around the projected point, is
        below 0.99 x the point's distance;
      - none of those 4 pixels belongs to the point's segment;
      - its surface normal, rotated with its object from the query frame, faces away from
        the camera (objects only; only where the query frame's normal map is locally smooth,
        and not when the query itself faces away, which Kubric reads as a mesh defect).
    Points outside the frame or the crop are occluded too; the pipeline applies that test
    (`pipeline._window_tracks`), after the crop.

Decisions where this differs from TAP-Vid-Kubric, because MooG's readouts keep only queries on
the clip's first frame (docs/moog_reference.md §10, `query_mode='first'`):
  * Queries are sampled on the first frame of the clip only, from every pixel inside the
    crop window. Kubric samples a (t, y, x) grid of stride 4 over the whole video, a stride
    chosen for speed; on one frame the grid would leave too few candidates at small sizes
    (at 48² its 10 % cap lets 144 grid points give only 14 tracks).
  * The per-segment budget is Kubric's: segments in increasing order of size each get an
    equal share of the tracks still to place, at most `MAX_SAMPLED_FRAC` of their pixels,
    so objects are favoured over the background. Within a segment the pixels are drawn
    without replacement (Kubric's multinomial draw can repeat a track).
  * Fewer than the budget are returned when the grid cannot supply it; the pipeline pads and
    masks them (`tracks_valid`), as `docs/evaluation_reference.md` §5.4 advises, instead of
    failing.
"""
import dataclasses
import itertools

import numpy as np

MAX_SAMPLED_FRAC = 0.1  # Kubric's cap: share of a segment's candidates that become tracks.
_DEPTH_MARGIN = 0.99  # Occluded if the rendered depth is below this x the point's distance.
_NORMAL_JUMP = 0.05  # Normal maps are rough where neighbours differ by more than this.
_CANONICAL_CORNERS = np.array(list(itertools.product([-0.5, 0.5], repeat=3)))


@dataclasses.dataclass(frozen=True)
class ClipLayers:
  """What the lift needs from a MOVi record, for the frames of one clip.

  Frame 0 of the arrays is the query frame. Shapes: T frames, H = W pixels, K instances.
  """
  depth: np.ndarray  # [T, H, W] float32 metric distance from the camera centre.
  segmentations: np.ndarray  # [T, H, W] int; 0 = background, v = instances[v - 1].
  object_coordinates: np.ndarray  # [H, W, 3] uint16 at the query frame.
  normals: np.ndarray  # [H, W, 3] uint16 at the query frame, (n + 1) / 2 * 65535.
  bboxes_3d: np.ndarray  # [K, T, 8, 3] world-space box corners.
  object_quaternions: np.ndarray  # [K, T, 4] w-first.
  camera_positions: np.ndarray  # [T, 3]
  camera_quaternions: np.ndarray  # [T, 4] w-first.
  focal_length: float
  sensor_width: float


def rotation_matrices(quaternions: np.ndarray) -> np.ndarray:
  """w-first quaternions [..., 4] (normalised here) -> rotation matrices [..., 3, 3]."""
  q = quaternions / np.linalg.norm(quaternions, axis=-1, keepdims=True)
  w, x, y, z = np.moveaxis(q, -1, 0)
  return np.stack([
      np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
  ], -2)


def project(points: np.ndarray, camera_positions: np.ndarray,
            camera_quaternions: np.ndarray, focal: float, size: int):
  """World points [T, N, 3] seen by the per-frame cameras -> pixels and distances.

  Args:
    points: [T, N, 3] world positions at each frame.
    camera_positions: [T, 3].
    camera_quaternions: [T, 4] w-first (Blender: the camera looks down its -z axis).
    focal: normalised focal length, focal_length / sensor_width.
    size: frame size in pixels (square frames).

  Returns:
    xy: [T, N, 2] raster coordinates (x, y) in pixels.
    distance: [T, N] Euclidean distance from the camera centre.
    in_front: [T, N] bool, False for points behind the camera.
  """
  rotations = rotation_matrices(camera_quaternions)
  relative = points - camera_positions[:, None]
  in_camera = np.einsum("tji,tnj->tni", rotations, relative)  # R^T (p - c).
  ahead = -in_camera[..., 2]
  with np.errstate(divide="ignore", invalid="ignore"):
    normalised = 0.5 + focal * in_camera[..., :2] / ahead[..., None] * np.array([1.0, -1.0])
  xy = np.where(ahead[..., None] > 0, normalised * size, -1.0)
  return xy, np.linalg.norm(relative, axis=-1), ahead > 0


def unproject(yx: np.ndarray, distance: np.ndarray, camera_position: np.ndarray,
              camera_quaternion: np.ndarray, focal: float, size: int) -> np.ndarray:
  """Pixels (integer (y, x) [N, 2]) at `distance` [N] from one camera -> world [N, 3]."""
  normalised = (yx[:, ::-1] + 0.5) / size - 0.5
  direction = np.concatenate([normalised * np.array([1.0, -1.0]) / focal,
                              -np.ones((len(yx), 1))], axis=-1)
  direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
  return camera_position + (direction * distance[:, None]) @ rotation_matrices(
      camera_quaternion).T


def box_to_world(bboxes_3d: np.ndarray) -> np.ndarray:
  """[T, 8, 3] box corners -> [T, 4, 3] affine maps: world = [local, 1] @ map[t]."""
  corners = np.concatenate([_CANONICAL_CORNERS, np.ones((8, 1))], axis=1)
  num_frames = bboxes_3d.shape[0]
  targets = np.moveaxis(bboxes_3d, 0, 1).reshape(8, num_frames * 3)
  maps, *_ = np.linalg.lstsq(corners, targets, rcond=None)
  return np.moveaxis(maps.reshape(4, num_frames, 3), 1, 0)


def tracks_per_segment(counts: np.ndarray, budget: int) -> np.ndarray:
  """Kubric's budget: how many of `budget` tracks each segment (its candidates) gets.

  Segments in increasing order of size each take an equal share of the tracks still to
  place, rounded half to even, at most `MAX_SAMPLED_FRAC` of their count.
  """
  chosen = np.zeros(len(counts), int)
  remaining = budget
  for rank, segment in enumerate(np.argsort(counts, kind="stable")):
    share = int(np.round(remaining / (len(counts) - rank)))
    chosen[segment] = min(share, int(np.round(counts[segment] * MAX_SAMPLED_FRAC)))
    remaining -= chosen[segment]
  return chosen


def sample_queries(segmentation: np.ndarray, crop, budget: int,
                   rng: np.random.Generator) -> np.ndarray:
  """Query pixels inside `crop`, each segment's share set by `tracks_per_segment`.

  Args:
    segmentation: [H, W] segment ids at the query frame.
    crop: (y0, x0, height, width) window in stored pixels.
    budget: tracks wanted.
    rng: the draw within each segment.

  Returns:
    [n, 2] integer (y, x) in raster order, n <= budget.
  """
  y0, x0, crop_h, crop_w = crop
  ids = segmentation[y0:y0 + crop_h, x0:x0 + crop_w].reshape(-1)
  segments, counts = np.unique(ids, return_counts=True)
  chosen = np.concatenate([
      rng.choice(np.flatnonzero(ids == segment), size=n, replace=False)
      for segment, n in zip(segments, tracks_per_segment(counts, budget))])
  return np.stack(np.unravel_index(np.sort(chosen), (crop_h, crop_w)), -1) + [y0, x0]


def _around(layer: np.ndarray, xy: np.ndarray) -> np.ndarray:
  """The 4 pixels of `layer` [T, H, W] around raster positions `xy` [T, N, 2] -> [4, T, N]."""
  size_t, height, width = layer.shape
  corner = np.floor(xy - 0.5).astype(int)  # Raster -> pixel index of the top-left one.
  frames = np.arange(size_t)[:, None]
  return np.stack([
      layer[frames, np.clip(corner[..., 1] + dy, 0, height - 1),
            np.clip(corner[..., 0] + dx, 0, width - 1)]
      for dy in (0, 1) for dx in (0, 1)])


def _decode_normals(encoded: np.ndarray) -> np.ndarray:
  """uint16 normals, (n + 1) / 2 * 65535 -> unit vectors n."""
  return encoded.astype(np.float64) / 65535 * 2 - 1


def smooth_normals(encoded: np.ndarray, yx: np.ndarray) -> np.ndarray:
  """Where the normal test can be trusted, at pixels `yx` [N, 2] of a [H, W, 3] uint16 map.

  Kubric's rule: at most 2 of the 4 diagonal neighbours (zero vectors beyond the border)
  differ from the pixel's normal by more than `_NORMAL_JUMP`; rough maps come from normal
  textures, not the mesh, and fail the test on visible points. Only the queried pixels are
  evaluated (Kubric computes the whole map).

  Returns:
    [N] bool.
  """
  height, width, _ = encoded.shape
  centre = _decode_normals(encoded[yx[:, 0], yx[:, 1]])
  rough = np.zeros(len(yx), int)
  for dy in (-1, 1):
    for dx in (-1, 1):
      y, x = yx[:, 0] + dy, yx[:, 1] + dx
      inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
      neighbour = _decode_normals(
          encoded[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)])
      neighbour = np.where(inside[:, None], neighbour, 0.0)
      rough += np.sum((neighbour - centre) ** 2, -1) > _NORMAL_JUMP ** 2
  return rough <= 2


def faces_away(normals_query: np.ndarray, rotations: np.ndarray, points: np.ndarray,
               camera_positions: np.ndarray) -> np.ndarray:
  """Whether each point's surface faces away from the camera at each frame.

  Args:
    normals_query: [N, 3] world normals at the query frame (frame 0).
    rotations: [T, 3, 3] the object's rotation at each frame.
    points: [T, N, 3] world positions.
    camera_positions: [T, 3].

  Returns:
    [T, N] bool; all False for a point that already faces away at the query frame.
  """
  in_object = normals_query @ rotations[0]  # R_0^T n, as rows.
  normals = np.einsum("tij,nj->tni", rotations, in_object)
  away = np.sum(normals * (points - camera_positions[:, None]), -1) > 0
  return away & ~away[:1]


def lift_tracks(clip: ClipLayers, queries: np.ndarray):
  """Tracks of query pixels on frame 0 through every frame of `clip`.

  Args:
    clip: the clip's layers (`ClipLayers`); frames must be square.
    queries: [N, 2] integer (y, x) on frame 0.

  Returns:
    target_points: [N, T, 2] float32 (x, y) raster coordinates in stored pixels.
    occluded: [N, T] bool (the frame and crop borders are tested by the pipeline).

  Raises:
    ValueError: non-square frames, or a segment id without an instance.
  """
  num_frames, height, width = clip.depth.shape
  if height != width:
    raise ValueError(f"MOVi point tracks need square frames, got {height}x{width}.")
  focal = clip.focal_length / clip.sensor_width
  ids = clip.segmentations[0][queries[:, 0], queries[:, 1]]
  num_instances = clip.bboxes_3d.shape[0]
  if ids.size and ids.max() > num_instances:
    raise ValueError(f"Segment id {ids.max()} has no instance (the record lists "
                     f"{num_instances}): segmentations and instances disagree.")
  points = np.zeros((num_frames, len(queries), 3))
  away = np.zeros((num_frames, len(queries)), bool)
  background = ids == 0
  points[:, background] = unproject(
      queries[background], clip.depth[0][tuple(queries[background].T)],
      clip.camera_positions[0], clip.camera_quaternions[0], focal, height)
  for segment in np.unique(ids[~background]):
    on_object = ids == segment
    yx = tuple(queries[on_object].T)
    local = clip.object_coordinates[yx].astype(np.float64) / 65535 - 0.5
    maps = box_to_world(clip.bboxes_3d[segment - 1])
    points[:, on_object] = np.einsum("ni,tij->tnj", local, maps[:, :3]) + maps[:, None, 3]
    away[:, on_object] = faces_away(
        _decode_normals(clip.normals[yx]),
        rotation_matrices(clip.object_quaternions[segment - 1]),
        points[:, on_object], clip.camera_positions) & smooth_normals(
            clip.normals, queries[on_object])
  xy, distance, in_front = project(points, clip.camera_positions,
                                   clip.camera_quaternions, focal, height)
  depth_hidden = _around(clip.depth, xy).max(0) < _DEPTH_MARGIN * distance
  segment_hidden = np.all(_around(clip.segmentations, xy) != ids, axis=0)
  occluded = ~in_front | depth_hidden | segment_hidden | away
  return (np.ascontiguousarray(np.moveaxis(xy, 0, 1), np.float32),
          np.ascontiguousarray(occluded.T))
