"""`synthetic_movi`: a MOVi-style TFDS dataset rendered by `scenes.py`.

It exists on a fresh machine without a download: the first
`tfds.builder('synthetic_movi/32x32_24f').download_and_prepare()` (which the
input pipeline calls automatically) renders it in a couple of minutes on two CPU
cores and stores it as ArrayRecord, the format the grain input pipeline reads
by random access (see `pipeline.py`).

Features use MOVi-E's names, shapes, dtypes and encodings wherever MOVi has the
field (`video` is a `tfds.features.Video`, `segmentations` and `depth` are
`Sequence(Image)` with uint8 / uint16 PNG frames, depth is encoded with the
per-video `metadata/depth_range`, `instances/bboxes` are ragged over the frames
listed in `instances/bbox_frames`, `instances/image_positions` are normalised
(x, y)). Synthetic-only fields: `query_points` [N, 3] (t, y, x) pixels,
`target_points` [N, T, 2] (x, y) pixels, `occluded` [N, T] (TAP-Vid-Kubric
conventions, exact), `track_instances` [N] (segmentation id of each track) and
`label` (motion class, `scenes.CLASS_NAMES`). Unlike MOVi the instances are not
sorted by visibility: instance 0 is always the main object whose motion decides
`label`.

Config names: `{H}x{W}_{T}f[_{R}x][_{scene}][_train{N}][_val{M}][_seed{S}]`,
built by `config_name`. `R` is the frame rate relative to the base rate (frame n
at t = n / R base frames), so `32x32_48f_2x` covers the same time span as
`32x32_24f` with twice as many frames. `scene` is `objects` or `objects_camera`
(`scenes.SCENES`; the MooG benchmark: shaded rigid objects that cross encoder
cells, with a moving camera in the second); without it the scenes are the
textured motion-class scenes. The optional parts override the split
sizes and the generator seed; any name following this grammar is accepted
(tests use e.g. `32x32_8f_train16_val8`), the `BUILDER_CONFIGS` are the
documented defaults. Example i of split s is rendered from
`np.random.default_rng([seed, s, i])`: deterministic and independent of the
other examples.
"""
import dataclasses
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import py_utils

from videolib.data import scenes

_DEFAULT_SIZES = {32: (2000, 200), 64: (2000, 200), 128: (1000, 200)}
_FRAME_SETTINGS = ((8, 1), (24, 1), (32, 1), (16, 2), (48, 2))
_NAME_RE = re.compile(
    r"^(?P<height>\d+)x(?P<width>\d+)_(?P<num_frames>\d+)f(?:_(?P<frame_rate>\d+)x)?"
    r"(?:_(?P<scene>objects_camera|objects))?"
    r"(?:_train(?P<num_train>\d+))?(?:_val(?P<num_validation>\d+))?"
    r"(?:_seed(?P<seed>\d+))?$")
_SPLIT_IDS = {"train": 0, "validation": 1}


@dataclasses.dataclass
class SyntheticMoviConfig(tfds.core.BuilderConfig):
  """One resolution / length / frame rate / size of `synthetic_movi`."""
  height: int = 32
  width: int = 32
  num_frames: int = 24
  frame_rate: int = 1
  num_train: int = 2000
  num_validation: int = 200
  seed: int = 0
  max_objects: int = 4
  num_tracks: int = 128
  scene: str = "classes"

  def scene_config(self) -> scenes.SceneConfig:
    return scenes.SceneConfig(
        height=self.height, width=self.width, num_frames=self.num_frames,
        frame_rate=self.frame_rate, max_objects=self.max_objects,
        num_tracks=self.num_tracks, scene=self.scene)


def config_name(resolution: int, num_frames: int, frame_rate: int = 1,
                num_train: int | None = None, num_validation: int | None = None,
                seed: int = 0, scene: str = "classes") -> str:
  """Name of a config, e.g. `config_name(32, 48, 2) == '32x32_48f_2x'`.

  Args:
    resolution: frame height and width.
    num_frames: number of frames per video.
    frame_rate: frames per base time unit (1 = base rate).
    num_train: train split size; None = the default for the resolution.
    num_validation: validation split size; None = the default.
    seed: generator seed.
    scene: one of `scenes.SCENES`.

  Returns:
    The config name (without the `synthetic_movi/` prefix).
  """
  name = f"{resolution}x{resolution}_{num_frames}f"
  if frame_rate != 1:
    name += f"_{frame_rate}x"
  if scene != "classes":
    name += f"_{scene}"
  if num_train is not None:
    name += f"_train{num_train}"
  if num_validation is not None:
    name += f"_val{num_validation}"
  if seed:
    name += f"_seed{seed}"
  return name


def config_from_name(name: str) -> SyntheticMoviConfig:
  """Parses a config name (see the module docstring) into a config."""
  match = _NAME_RE.match(name)
  if match is None:
    raise ValueError(
        f"Unknown synthetic_movi config {name!r}: expected "
        "'{H}x{W}_{T}f[_{R}x][_objects|_objects_camera][_train{N}][_val{M}][_seed{S}]', "
        "e.g. '32x32_24f_objects' or '32x32_48f_2x'.")
  fields = {k: v if k == "scene" else int(v)
            for k, v in match.groupdict().items() if v is not None}
  default_train, default_validation = _DEFAULT_SIZES.get(fields["height"], (1000, 200))
  fields.setdefault("num_train", default_train)
  fields.setdefault("num_validation", default_validation)
  return SyntheticMoviConfig(
      name=name,
      description=(f"{fields['height']}x{fields['width']}, {fields['num_frames']} "
                   f"frames at {fields.get('frame_rate', 1)}x the base rate, "
                   f"{fields.get('scene', 'classes')} scenes"),
      **fields)


class SyntheticMovi(tfds.core.GeneratorBasedBuilder):
  """MOVi-style procedural videos with exact tracks and a motion class label."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      config_from_name(config_name(resolution, num_frames, frame_rate))
      for resolution in (32, 64, 128)
      for num_frames, frame_rate in _FRAME_SETTINGS
  ] + [
      config_from_name(config_name(resolution, 24, scene=scene))
      for resolution in (32, 64)
      for scene in ("objects", "objects_camera")
  ]

  @py_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default lookup needs the optional `importlib_resources` package
    # for builders defined inside a package.
    return epath.Path(__file__)

  def __init__(self, *, config=None, **kwargs):
    if isinstance(config, str) and config not in self.builder_configs:
      config = config_from_name(config)
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    s, h, w = c.num_frames, c.height, c.width
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "metadata": {
                "video_name": tfds.features.Text(),
                "width": np.int32,
                "height": np.int32,
                "num_frames": np.int32,
                "num_instances": np.uint16,
                "depth_range": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            },
            "instances": tfds.features.Sequence({
                "image_positions": tfds.features.Tensor(shape=(s, 2), dtype=np.float32),
                "bboxes": tfds.features.Sequence(tfds.features.BBoxFeature()),
                "bbox_frames": tfds.features.Sequence(
                    tfds.features.Tensor(shape=(), dtype=np.int32)),
                "visibility": tfds.features.Tensor(shape=(s,), dtype=np.uint16),
            }),
            "video": tfds.features.Video(shape=(s, h, w, 3)),
            "segmentations": tfds.features.Sequence(
                tfds.features.Image(shape=(h, w, 1), dtype=np.uint8), length=s),
            "depth": tfds.features.Sequence(
                tfds.features.Image(shape=(h, w, 1), dtype=np.uint16), length=s),
            "query_points": tfds.features.Tensor(shape=(c.num_tracks, 3), dtype=np.float32),
            "target_points": tfds.features.Tensor(
                shape=(c.num_tracks, s, 2), dtype=np.float32),
            "occluded": tfds.features.Tensor(shape=(c.num_tracks, s), dtype=np.bool_),
            "track_instances": tfds.features.Tensor(shape=(c.num_tracks,), dtype=np.int32),
            "label": tfds.features.ClassLabel(names=scenes.CLASS_NAMES),
        }),
        homepage="https://github.com/google-research/kubric/tree/main/challenges/movi",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is rendered locally.
    c = self.builder_config
    return {
        "train": self._generate_examples("train", c.num_train),
        "validation": self._generate_examples("validation", c.num_validation),
    }

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config.scene_config()
    for index in range(num_examples):
      seed = [self.builder_config.seed, _SPLIT_IDS[split], index]
      yield index, to_movi_features(scenes.generate(config, seed),
                                    video_name=f"{split}_{index:06d}")


def to_movi_features(example: dict, video_name: str) -> dict:
  """Converts a `scenes.generate` output to the MOVi feature layout."""
  depth, depth_range = scenes.encode_depth(example["depth"])
  num_frames, height, width = example["video"].shape[:3]
  instances = []
  for k in range(example["num_instances"]):
    frames = np.flatnonzero(example["instances/bbox_frames"][k])
    instances.append({
        "image_positions": example["instances/image_positions"][k],
        "bboxes": [tfds.features.BBox(*box) for box in
                   np.clip(example["instances/bboxes"][k, frames], 0.0, 1.0)],
        "bbox_frames": frames.astype(np.int32),
        "visibility": example["instances/visibility"][k],
    })
  return {
      "metadata": {
          "video_name": video_name,
          "width": width,
          "height": height,
          "num_frames": num_frames,
          "num_instances": example["num_instances"],
          "depth_range": depth_range,
      },
      "instances": instances,
      "video": example["video"],
      "segmentations": example["segmentations"],
      "depth": depth,
      "query_points": example["query_points"],
      "target_points": example["target_points"],
      "occluded": example["occluded"],
      "track_instances": example["track_instances"],
      "label": example["label"],
  }
