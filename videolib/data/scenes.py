"""Procedural MOVi-like scenes with exact ground truth, in pure numpy.

Two kinds of scene (`SceneConfig.scene`, `SCENES`):

* 'classes' (the MGTC motion-class data and the harder MooG data): a
  high-contrast textured background plane seen by a camera that pans in half of
  the videos, plus 1..4 flat objects (square, disk, triangle, ring; flat,
  striped or checkered) that drift slowly; only the main object's motion, which
  decides `label`, is fast.
* 'objects' / 'objects_camera' (the MooG benchmark, modelled on Kubric
  MOVi-A): 3..5 smoothly shaded rigid objects that all slide across a smooth
  floor at 1-2 encoder cells per frame (4-pixel cells at 32x32), crossing and
  occluding each other at different depths; 'objects_camera' also moves the
  camera steadily (objects move against it on screen), so every pixel moves (the
  case where grid-tied tokens should suffer most). `label` keeps its meaning:
  the main object follows its class motion (in the world), at larger amplitudes.

A scene is drawn as objects at different depths over a background plane.
Objects are drawn in depth order (nearer occludes farther) and their
on-screen radius is `size / depth` (perspective scaling). Every motion is a
closed-form function of continuous time, so

  * the same scene can be sampled at any frame rate ("more frames over the same
    time span": `frame_rate=2` samples t = 0, 0.5, 1, ...), and
  * point tracks are exact: a point keeps its coordinates in its object's frame
    (or, for the background, in world coordinates) and is re-projected with the
    known motion; occlusion is decided analytically (outside the frame, or
    inside the shape of a nearer object at the point's exact position).

Time is measured in base frames: at `frame_rate=1` frame n is at t = n.

Coordinates. Internally positions are (y, x) in units of the image height, so
the image covers y in [0, 1] and x in [0, W / H]; pixel centres are at
((i + 0.5) / H, (j + 0.5) / H). Outputs use the TAP-Vid-Kubric conventions:
`query_points` (t, y, x) and `target_points` (x, y) in raster pixels (image
corner 0, pixel centres at +0.5).

Motion classes (`label`, for MGTC classification) depend ONLY on the motion of
the main object (instance 0 = segmentation id 1, always the nearest object).
Appearance, start position, orientation, size and the distractors are drawn
independently of the class, and the start position (orientation) is uniform
over a full bounce period (full turn), so every single frame has the same
distribution for every class: a single-frame classifier is at chance.
`oscillate_fast_a` (0.3 cycles per base frame) and `oscillate_fast_b` (0.7) are
exact aliases of each other at `frame_rate=1` (0.7 = 1 - 0.3 and the phase is
uniform), so telling them apart needs `frame_rate >= 2`.
"""
import dataclasses

import numpy as np

CLASS_NAMES = (
    "slide_horizontal",  # Constant speed along x, bouncing at the borders.
    "slide_vertical",  # Constant speed along y, bouncing at the borders.
    "rotate_clockwise",  # In place, clockwise as displayed.
    "rotate_counterclockwise",
    "oscillate_slow",  # 1/16 cycle per base frame along a random axis.
    "oscillate_fast_a",  # 0.3 cycle per base frame: aliases with _b at 1x.
    "oscillate_fast_b",  # 0.7 cycle per base frame.
    "static",
)
NUM_CLASSES = len(CLASS_NAMES)
SHAPES = ("square", "disk", "triangle", "ring")
# "shaded": a smooth gradient from the main colour to a darker shade of it, fixed to
# the object (a lit solid); the first three are the 'classes' scenes' patterns.
TEXTURES = ("flat", "stripes", "checker", "shaded")
_NUM_PATTERNS = 3
SCENES = ("classes", "objects", "objects_camera")
OSCILLATION_FREQUENCIES = {"oscillate_slow": 1 / 16, "oscillate_fast_a": 0.3,
                           "oscillate_fast_b": 0.7}

# Saturated object colours; the background uses muted random colours.
_PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
     [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
     [250, 250, 250], [20, 20, 20]], np.uint8)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """What to render.

  Attributes:
    height: frame height in pixels.
    width: frame width in pixels.
    num_frames: number of frames.
    frame_rate: frames per base time unit; frame n is at t = n / frame_rate.
    min_objects: minimum number of objects (the main object included).
    max_objects: maximum number of objects.
    num_tracks: number of point tracks to sample.
    flat_objects: if True every object has a single colour (for tests).
    scene: one of `SCENES` (see the module docstring).
  """
  height: int = 32
  width: int = 32
  num_frames: int = 24
  frame_rate: int = 1
  min_objects: int = 1
  max_objects: int = 4
  num_tracks: int = 128
  flat_objects: bool = False
  scene: str = "classes"

  def __post_init__(self):
    if self.scene not in SCENES:
      raise ValueError(f"SceneConfig.scene must be one of {SCENES}, got {self.scene!r}.")


@dataclasses.dataclass(frozen=True)
class Scene:
  """Parameters of one scene; K objects, object 0 is the main object.

  Positions are unfolded (before bouncing) in units of the image height.
  """
  label: int
  start: np.ndarray  # [K, 2] (y, x), uniform over one bounce period.
  velocity: np.ndarray  # [K, 2] per base frame.
  acceleration: np.ndarray  # [K, 2] per base frame squared.
  oscillation: np.ndarray  # [K, 2] amplitude vector.
  frequency: np.ndarray  # [K] cycles per base frame.
  phase: np.ndarray  # [K] radians.
  angle: np.ndarray  # [K] orientation at t = 0, radians.
  angular_velocity: np.ndarray  # [K] radians per base frame (> 0: clockwise).
  depth: np.ndarray  # [K] depth at t = 0.
  depth_velocity: np.ndarray  # [K] per base frame.
  size: np.ndarray  # [K] radius times depth.
  shape: np.ndarray  # [K] int index into SHAPES.
  texture: np.ndarray  # [K] int index into TEXTURES.
  texture_frequency: np.ndarray  # [K] stripes per object radius.
  colors: np.ndarray  # [K, 2, 3] uint8, (main colour, texture colour).
  background_colors: np.ndarray  # [2, 3] float.
  background_waves: np.ndarray  # [2, 2] wave vectors (cycles per unit).
  background_phases: np.ndarray  # [2]
  background_checker: bool
  camera_start: np.ndarray  # [2] world position of the image corner.
  camera_velocity: np.ndarray  # [2] per base frame.
  background_depth: float
  background_tilt: float  # depth change per unit of world y.


def _main_object_motion(rng: np.random.Generator, label: int, speed: tuple[float, float],
                        amplitude: tuple[float, float]):
  """The main object's motion for its class.

  Args:
    rng: random generator.
    label: index into CLASS_NAMES.
    speed: range of the slide speed, units of the image height per base frame.
    amplitude: range of the oscillation amplitude, same units.

  Returns:
    velocity [2], angular velocity, oscillation amplitude vector [2], frequency.
  """
  velocity, angular_velocity = np.zeros(2), 0.0
  oscillation, frequency = np.zeros(2), 0.0
  name = CLASS_NAMES[label]
  main_speed = rng.uniform(*speed) * rng.choice([-1.0, 1.0])
  if name == "slide_horizontal":
    velocity = np.array([0.0, main_speed])
  elif name == "slide_vertical":
    velocity = np.array([main_speed, 0.0])
  elif name.startswith("rotate"):
    turn = rng.uniform(0.1, 0.2)
    angular_velocity = turn if name == "rotate_clockwise" else -turn
  elif name in OSCILLATION_FREQUENCIES:
    axis = rng.uniform(0, 2 * np.pi)
    oscillation = rng.uniform(*amplitude) * np.array([np.sin(axis), np.cos(axis)])
    frequency = OSCILLATION_FREQUENCIES[name]
  return velocity, angular_velocity, oscillation, frequency


def sample_scene(rng: np.random.Generator, config: SceneConfig) -> Scene:
  """Draws scene parameters; the class only changes the main object's motion."""
  if config.scene != "classes":
    return _sample_objects_scene(rng, config)
  num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
  extent = np.array([1.0, config.width / config.height])
  label = int(rng.integers(NUM_CLASSES))

  # Distractors: slow drift with a little acceleration and rotation.
  direction = rng.uniform(0, 2 * np.pi, num_objects)
  speed = rng.uniform(0.0, 0.012, num_objects)
  velocity = speed[:, None] * np.stack([np.sin(direction), np.cos(direction)], -1)
  acceleration = rng.uniform(-3e-4, 3e-4, (num_objects, 2))
  angular_velocity = rng.uniform(-0.05, 0.05, num_objects)
  oscillation = np.zeros((num_objects, 2))
  frequency = np.zeros(num_objects)
  depth = rng.uniform(3.0, 7.0, num_objects)
  depth_velocity = rng.uniform(-0.02, 0.02, num_objects)
  size = rng.uniform(0.4, 0.8, num_objects)
  texture = rng.integers(_NUM_PATTERNS, size=num_objects)

  # Main object: nearest (never occluded), always textured so rotation shows.
  depth[0], depth_velocity[0] = rng.uniform(2.0, 2.5), 0.0
  size[0] = rng.uniform(0.35, 0.5)
  texture[0] = rng.integers(1, _NUM_PATTERNS)
  acceleration[0] = 0.0
  velocity[0], angular_velocity[0], oscillation[0], frequency[0] = _main_object_motion(
      rng, label, speed=(0.02, 0.04), amplitude=(0.1, 0.15))
  if config.flat_objects:
    texture[:] = 0

  colors = _PALETTE[rng.integers(len(_PALETTE), size=(num_objects, 2))]
  wave_angle = rng.uniform(0, 2 * np.pi, 2)
  wave_cycles = rng.uniform(1.0, 3.0, 2)
  moving_camera = rng.random() < 0.5
  camera_direction = rng.uniform(0, 2 * np.pi)
  camera_speed = rng.uniform(0.005, 0.02) if moving_camera else 0.0
  return Scene(
      label=label,
      start=rng.uniform(0, 2 * extent, (num_objects, 2)),
      velocity=velocity,
      acceleration=acceleration,
      oscillation=oscillation,
      frequency=frequency,
      phase=rng.uniform(0, 2 * np.pi, num_objects),
      angle=rng.uniform(0, 2 * np.pi, num_objects),
      angular_velocity=angular_velocity,
      depth=depth,
      depth_velocity=depth_velocity,
      size=size,
      shape=rng.integers(len(SHAPES), size=num_objects),
      texture=texture,
      texture_frequency=rng.choice([1.5, 2.0, 3.0], num_objects),
      colors=colors,
      background_colors=rng.uniform(40, 200, (2, 3)),
      background_waves=wave_cycles[:, None] * np.stack(
          [np.sin(wave_angle), np.cos(wave_angle)], -1),
      background_phases=rng.uniform(0, 2 * np.pi, 2),
      background_checker=bool(rng.random() < 0.5),
      camera_start=rng.uniform(0, 1, 2),
      camera_velocity=camera_speed * np.array(
          [np.sin(camera_direction), np.cos(camera_direction)]),
      background_depth=float(rng.uniform(9.0, 11.0)),
      background_tilt=float(rng.uniform(-1.0, 1.0)),
  )


def _sample_objects_scene(rng: np.random.Generator, config: SceneConfig) -> Scene:
  """Draws an 'objects' / 'objects_camera' scene (module docstring).

  Speeds are in units of the image height per base frame: 0.03-0.06 is 1-2 pixels a
  frame at 32x32, so in an 8-frame clip an object crosses 2-3 of the 4-pixel encoder
  cells. Objects bounce at the image borders, so they stay in view; with a moving
  camera their on-screen velocity is their own minus the camera's.
  """
  num_objects = int(rng.integers(3, 6))  # MOVi-A-like counts; min/max_objects are 'classes' only.
  extent = np.array([1.0, config.width / config.height])
  label = int(rng.integers(NUM_CLASSES))

  direction = rng.uniform(0, 2 * np.pi, num_objects)
  speed = rng.uniform(0.03, 0.06, num_objects)
  velocity = speed[:, None] * np.stack([np.sin(direction), np.cos(direction)], -1)
  angular_velocity = rng.uniform(-0.1, 0.1, num_objects)
  oscillation = np.zeros((num_objects, 2))
  frequency = np.zeros(num_objects)
  # Distinct depths (nearest first is the main object), so objects that cross occlude.
  depth = np.sort(rng.uniform(2.5, 6.0, num_objects))
  depth_velocity = rng.uniform(-0.03, 0.03, num_objects)
  depth_velocity[0] = 0.0
  size = rng.uniform(0.12, 0.2, num_objects) * depth  # on-screen radius 4-6.5 px at 32x32
  velocity[0], angular_velocity[0], oscillation[0], frequency[0] = _main_object_motion(
      rng, label, speed=(0.04, 0.07), amplitude=(0.2, 0.3))

  camera_velocity = np.zeros(2)
  if config.scene == "objects_camera":
    camera_direction = rng.uniform(0, 2 * np.pi)
    camera_velocity = rng.uniform(0.03, 0.05) * np.array(
        [np.sin(camera_direction), np.cos(camera_direction)])
    # Object motion is drawn in the world; on screen the camera's motion is subtracted,
    # so an object at rest moves too.
    velocity = velocity - camera_velocity
  colors = _PALETTE[rng.choice(len(_PALETTE) - 2, size=num_objects, replace=False)]
  shade = np.round(colors * 0.45).astype(np.uint8)
  wave_angle = rng.uniform(0, 2 * np.pi, 2)
  floor = rng.uniform(70, 150, 3)
  return Scene(
      label=label,
      start=rng.uniform(0, 2 * extent, (num_objects, 2)),
      velocity=velocity,
      acceleration=np.zeros((num_objects, 2)),
      oscillation=oscillation,
      frequency=frequency,
      phase=rng.uniform(0, 2 * np.pi, num_objects),
      angle=rng.uniform(0, 2 * np.pi, num_objects),
      angular_velocity=angular_velocity,
      depth=depth,
      depth_velocity=depth_velocity,
      size=size,
      shape=rng.integers(3, size=num_objects),  # square, disk, triangle: solids
      texture=np.full(num_objects, 0 if config.flat_objects else TEXTURES.index("shaded")),
      texture_frequency=np.ones(num_objects),
      colors=np.stack([colors, shade], 1),
      # A smooth floor: two low-contrast waves of about one cycle per image height.
      background_colors=np.stack([floor - 35, floor + 35]),
      background_waves=rng.uniform(0.6, 1.2, 2)[:, None] * np.stack(
          [np.sin(wave_angle), np.cos(wave_angle)], -1),
      background_phases=rng.uniform(0, 2 * np.pi, 2),
      background_checker=False,
      camera_start=rng.uniform(0, 1, 2),
      camera_velocity=camera_velocity,
      background_depth=float(rng.uniform(9.0, 11.0)),
      background_tilt=float(rng.uniform(-1.0, 1.0)),
  )


def frame_times(config: SceneConfig) -> np.ndarray:
  """Continuous times of the frames, [T] in base frames."""
  return np.arange(config.num_frames) / config.frame_rate


def _bounce(position: np.ndarray, extent: np.ndarray) -> np.ndarray:
  """Folds unfolded positions into [0, extent] (elastic bounces at the walls)."""
  phase = np.mod(position, 2 * extent)
  return extent - np.abs(phase - extent)


def object_states(scene: Scene, times: np.ndarray, extent: np.ndarray):
  """Pose of every object at every time.

  Args:
    scene: the scene.
    times: [T] continuous times.
    extent: [2] image size (y, x) in units of the image height.

  Returns:
    centres [T, K, 2] (y, x), angles [T, K], radii [T, K], depths [T, K].
  """
  t = times[:, None, None]
  wobble = np.sin(2 * np.pi * scene.frequency * times[:, None] + scene.phase)
  unfolded = (scene.start + scene.velocity * t + 0.5 * scene.acceleration * t**2
              + scene.oscillation * wobble[..., None])
  centres = _bounce(unfolded, extent)
  angles = scene.angle + scene.angular_velocity * times[:, None]
  depths = scene.depth + scene.depth_velocity * times[:, None]
  return centres, angles, scene.size / depths, depths


def camera_offsets(scene: Scene, times: np.ndarray) -> np.ndarray:
  """World position of the image corner, [T, 2] (y, x)."""
  return scene.camera_start + scene.camera_velocity * times[:, None]


def _to_local(points, centres, angles, radii):
  """Image points -> object frame (units of the object radius).

  Args:
    points: [T, P, 2] (y, x).
    centres: [T, K, 2].
    angles: [T, K].
    radii: [T, K].

  Returns:
    [T, K, P, 2] (b, a): object-frame (y, x).
  """
  d = points[:, None] - centres[:, :, None]
  cos, sin = np.cos(angles)[..., None], np.sin(angles)[..., None]
  a = (cos * d[..., 1] + sin * d[..., 0]) / radii[..., None]
  b = (-sin * d[..., 1] + cos * d[..., 0]) / radii[..., None]
  return np.stack([b, a], -1)


def _to_image(local, centres, angles, radii):
  """Object frame -> image points; inverse of `_to_local` for one object each.

  Args:
    local: [P, 2] (b, a).
    centres: [T, P, 2] pose of each point's object.
    angles: [T, P].
    radii: [T, P].

  Returns:
    [T, P, 2] (y, x).
  """
  b, a = local[..., 0] * radii, local[..., 1] * radii
  cos, sin = np.cos(angles), np.sin(angles)
  return centres + np.stack([sin * a + cos * b, cos * a - sin * b], -1)


def _inside(local: np.ndarray, shape: np.ndarray) -> np.ndarray:
  """Whether object-frame points lie in their object's shape.

  Args:
    local: [T, K, P, 2] object-frame (b, a).
    shape: [K] shape indices.

  Returns:
    [T, K, P] bool.
  """
  b, a = local[..., 0], local[..., 1]
  r2 = a**2 + b**2
  masks = np.stack([
      np.maximum(np.abs(a), np.abs(b)) <= 0.8,
      r2 <= 1.0,
      (b <= 0.5) & (0.866 * a - 0.5 * b <= 0.5) & (-0.866 * a - 0.5 * b <= 0.5),
      (r2 <= 1.0) & (r2 >= 0.3),
  ])
  return np.take_along_axis(masks, shape[None, None, :, None], axis=0)[0]


def _texture(local: np.ndarray, texture: np.ndarray, frequency: np.ndarray):
  """Weight of the texture colour at object-frame points; [..., K, P] float in [0, 1].

  Patterns are 0 or 1 (so their colours are exact palette entries); "shaded" is a
  linear ramp along the object's own b axis.
  """
  cells = np.floor(local * frequency[:, None, None])
  stripes = np.mod(cells[..., 1], 2) == 1
  checker = np.mod(cells[..., 0] + cells[..., 1], 2) == 1
  ramp = np.clip(0.5 + 0.5 * local[..., 0], 0.0, 1.0)
  texture = texture[:, None]
  return np.select([texture == 1, texture == 2, texture == 3],
                   [stripes, checker, ramp], 0.0).astype(np.float64)


def _background(scene: Scene, world: np.ndarray):
  """Background colour [..., 3] float and depth [...] at world points."""
  waves = np.einsum("...c,wc->...w", world, scene.background_waves)
  waves = 2 * np.pi * waves + scene.background_phases
  if scene.background_checker:
    mix = (np.sin(waves[..., 0]) * np.sin(waves[..., 1]) > 0).astype(np.float64)
  else:
    mix = 0.5 + 0.25 * (np.sin(waves[..., 0]) + np.sin(waves[..., 1]))
  c0, c1 = scene.background_colors
  color = c0 * (1 - mix[..., None]) + c1 * mix[..., None]
  depth = scene.background_depth + scene.background_tilt * (world[..., 0] - 0.5)
  return color, depth


def render(scene: Scene, config: SceneConfig):
  """Renders the scene (one sample per pixel centre, no antialiasing).

  Returns:
    dict with video uint8 [T, H, W, 3], segmentations uint8 [T, H, W, 1]
    (0 = background, object k -> k + 1) and depth float32 [T, H, W, 1].
  """
  h, w, n = config.height, config.width, config.num_frames
  times = frame_times(config)
  extent = np.array([1.0, w / h])
  centres, angles, radii, depths = object_states(scene, times, extent)
  rows, cols = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / h,
                           indexing="ij")
  grid = np.broadcast_to(np.stack([rows, cols], -1).reshape(1, h * w, 2),
                         (n, h * w, 2))
  local = _to_local(grid, centres, angles, radii)  # [T, K, P, 2]
  inside = _inside(local, scene.shape)
  textured = _texture(local, scene.texture, scene.texture_frequency)
  z_buffer = np.where(inside, depths[..., None], np.inf)
  nearest = np.argmin(z_buffer, axis=1)  # [T, P]
  hit = np.isfinite(np.min(z_buffer, axis=1))
  mix = np.take_along_axis(textured, nearest[:, None], 1)[:, 0, :, None]
  object_color = np.round(scene.colors[nearest, 0] * (1 - mix) + scene.colors[nearest, 1] * mix)
  world = grid + camera_offsets(scene, times)[:, None]
  background_color, background_depth = _background(scene, world)
  video = np.where(hit[..., None], object_color, np.round(background_color))
  depth = np.where(hit, np.take_along_axis(depths, nearest, 1), background_depth)
  segmentation = np.where(hit, nearest + 1, 0)
  return {
      "video": video.reshape(n, h, w, 3).astype(np.uint8),
      "segmentations": segmentation.reshape(n, h, w, 1).astype(np.uint8),
      "depth": depth.reshape(n, h, w, 1).astype(np.float32),
  }


def sample_tracks(scene: Scene, config: SceneConfig, segmentations: np.ndarray,
                  rng: np.random.Generator):
  """Samples exact point tracks (TAP-Vid-Kubric conventions).

  Query points are pixel centres at a uniformly random frame; the segment
  (background or an object visible there) is chosen uniformly first, so small
  objects get as many points as large ones.

  Args:
    scene: the scene.
    config: the scene config.
    segmentations: [T, H, W, 1] from `render`.
    rng: random generator.

  Returns:
    query_points float32 [N, 3] (t, y, x) in pixels, target_points float32
    [N, T, 2] (x, y) in pixels, occluded bool [N, T], track_instances int32 [N]
    (segmentation id of the tracked surface, 0 = background).
  """
  h, w, n = config.height, config.width, config.num_frames
  num_objects = len(scene.depth)
  seg = segmentations.reshape(n, h * w).astype(np.int64)
  counts = np.stack([np.bincount(s, minlength=num_objects + 1) for s in seg])
  segments_present = (counts > 0).sum(-1, keepdims=True)
  weights = 1.0 / (counts[np.arange(n)[:, None], seg] * segments_present)
  cdf = np.cumsum(weights, axis=-1)
  query_frames = rng.integers(n, size=config.num_tracks)
  u = rng.random(config.num_tracks) * cdf[query_frames, -1]
  pixels = np.minimum((cdf[query_frames] < u[:, None]).sum(-1), h * w - 1)
  instances = seg[query_frames, pixels]
  query = np.stack([(pixels // w + 0.5) / h, (pixels % w + 0.5) / h], -1)

  times = frame_times(config)
  extent = np.array([1.0, w / h])
  centres, angles, radii, depths = object_states(scene, times, extent)
  camera = camera_offsets(scene, times)
  # Background points are fixed in world coordinates.
  world = query + camera[query_frames]
  background_tracks = world[None] - camera[:, None]  # [T, N, 2]
  # Object points are fixed in their object's frame.
  obj = np.maximum(instances - 1, 0)
  q_centre = centres[query_frames, obj]
  q_local = _to_local(query[:, None], q_centre[:, None], angles[query_frames, obj][:, None],
                      radii[query_frames, obj][:, None])[:, 0, 0]
  object_tracks = _to_image(q_local, centres[:, obj], angles[:, obj], radii[:, obj])
  is_object = (instances > 0)[None, :, None]
  tracks = np.where(is_object, object_tracks, background_tracks)  # [T, N, 2]

  _, background_depth = _background(scene, world)
  point_depth = np.where(instances > 0, depths[:, obj], background_depth)  # [T, N]
  covered = _inside(_to_local(tracks, centres, angles, radii), scene.shape)
  nearer = depths[:, :, None] < point_depth[:, None, :]  # [T, K, N]
  hidden = np.any(covered & nearer, axis=1)
  outside = ((tracks[..., 0] < 0) | (tracks[..., 0] >= 1) |
             (tracks[..., 1] < 0) | (tracks[..., 1] >= extent[1]))
  pixels_yx = tracks * h
  return {
      "query_points": np.stack(
          [query_frames, query[:, 0] * h, query[:, 1] * h], -1).astype(np.float32),
      "target_points": np.transpose(pixels_yx[..., ::-1], (1, 0, 2)).astype(np.float32),
      "occluded": np.transpose(hidden | outside),
      "track_instances": instances.astype(np.int32),
  }


def instance_annotations(scene: Scene, config: SceneConfig,
                         segmentations: np.ndarray):
  """MOVi-style per-instance annotations.

  Returns:
    dict with bboxes [K, T, 4] float32 normalised (ymin, xmin, ymax, xmax) of
    the visible pixels (zeros where invisible), bbox_frames [K, T] bool (object
    visible), image_positions [K, T, 2] float32 normalised (x, y) of the object
    centre (as MOVi: x first), visibility [K, T] uint16 pixel counts.
  """
  h, w = config.height, config.width
  num_objects = len(scene.depth)
  ids = np.arange(1, num_objects + 1)[:, None, None, None]
  masks = segmentations[None, ..., 0] == ids  # [K, T, H, W]
  rows, cols = masks.any(-1), masks.any(-2)
  visible = rows.any(-1)
  ymin = np.argmax(rows, -1) / h
  ymax = (h - np.argmax(rows[..., ::-1], -1)) / h
  xmin = np.argmax(cols, -1) / w
  xmax = (w - np.argmax(cols[..., ::-1], -1)) / w
  boxes = np.where(visible[..., None], np.stack([ymin, xmin, ymax, xmax], -1), 0.0)
  centres, _, _, _ = object_states(scene, frame_times(config),
                                   np.array([1.0, w / h]))
  image_positions = np.stack(
      [centres[..., 1] * h / w, centres[..., 0]], -1).transpose(1, 0, 2)
  return {
      "bboxes": boxes.astype(np.float32),
      "bbox_frames": visible,
      "image_positions": image_positions.astype(np.float32),
      "visibility": masks.sum((-1, -2)).astype(np.uint16),
  }


def encode_depth(depth: np.ndarray):
  """Float depth -> (uint16, range [2]) as in MOVi (`convert_float_to_uint16`)."""
  lo, hi = float(depth.min()), float(depth.max())
  scale = max(hi - lo, 1e-6)
  encoded = np.round((depth - lo) / scale * 65535).astype(np.uint16)
  return encoded, np.array([lo, hi], np.float32)


def decode_depth(encoded: np.ndarray, depth_range: np.ndarray) -> np.ndarray:
  """uint16 MOVi depth -> float32 metric depth (uint16 / 65535 * range + min)."""
  lo, hi = np.asarray(depth_range, np.float32)
  return encoded.astype(np.float32) / 65535.0 * (hi - lo) + lo


def generate(config: SceneConfig, seed) -> dict[str, np.ndarray]:
  """Renders one scene with all annotations; deterministic in `seed`.

  Args:
    config: what to render.
    seed: anything `np.random.default_rng` accepts (e.g. [seed, split, index]).

  Returns:
    A dict with `label`, `video`, `segmentations`, `depth` (float32 metric),
    the `instance_annotations` under `instances/...` and the
    `sample_tracks` outputs.
  """
  rng = np.random.default_rng(seed)
  scene = sample_scene(rng, config)
  frames = render(scene, config)
  example = {"label": scene.label, "num_instances": len(scene.depth), **frames}
  example.update({f"instances/{k}": v for k, v in instance_annotations(
      scene, config, frames["segmentations"]).items()})
  example.update(sample_tracks(scene, config, frames["segmentations"], rng))
  return example
