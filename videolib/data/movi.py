"""Reader for the Kubric MOVi datasets (`movi_a` ... `movi_f`) without builder code.

A prepared TFDS dataset is a directory `<data_dir>/<variant>/<config>/<version>`
holding `dataset_info.json`, `features.json` and the record shards;
`tfds.builder_from_directory` rebuilds a read-only builder from those files, so
no Kubric code is needed. The input pipeline reads examples by random access
through grain, which needs the ArrayRecord file format:

  * ArrayRecord copy (what the official MooG pipeline reads):
      gsutil -m cp -r gs://kubric-public/grain/movi_e/256x256/1.0.0 \
        <data_dir>/movi_e/256x256/
    or set `data_dir=gs://kubric-public/grain` to read from the bucket.
  * TFRecord copy (gs://kubric-public/tfds/<variant>/<config>/1.0.0, all
    variants and resolutions): copy it the same way, then convert in place with
      tfds convert_format --dataset_version_dir=<data_dir>/movi_e/128x128/1.0.0 \
        --out_file_format=array_record

TFDS decodes uint16 PNG frames (`depth`, `normal`, `object_coordinates`) with OpenCV,
which this project does not depend on. Here single-channel uint16 frames are decoded with
PIL; the three-channel ones, of which PIL keeps only the high byte, with TensorFlow
(`decode_rgb16_png`). The large layers stay undecoded on read: flow is never used, and the
point-track lift decodes one frame of normals and object coordinates per clip.

MOVi holds no point tracks: the pipeline lifts them from the object coordinates, depth,
segmentation, normals, 3-D boxes and cameras as TAP-Vid-Kubric does (`movi_tracks.py`).
"""
import io
import re

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from videolib.data import prepared

MOVI_VARIANTS = ("movi_a", "movi_b", "movi_c", "movi_d", "movi_e", "movi_f")
MOVI_VERSION = "1.0.0"
_CONFIG_RE = re.compile(r"^\d+x\d+$")
# Layers left as bytes on read (the point-track lift decodes one frame of `normal` and
# `object_coordinates` itself).
_UNDECODED_LAYERS = ("forward_flow", "backward_flow", "normal", "object_coordinates")
# Three-channel uint16 PNG layers: PIL reads these as 8 bits per channel.
RGB16_LAYERS = ("normal", "object_coordinates")


def is_movi(name: str) -> bool:
  """Whether `name` ('movi_e/128x128') refers to a Kubric MOVi dataset."""
  return name.split("/")[0] in MOVI_VARIANTS


def parse_name(name: str) -> tuple[str, str]:
  """'movi_e/128x128' -> ('movi_e', '128x128'); raises on unknown names."""
  variant, _, config = name.partition("/")
  if variant not in MOVI_VARIANTS or not _CONFIG_RE.match(config):
    raise ValueError(
        f"Unknown MOVi dataset {name!r}: expected '<variant>/<H>x<W>' with variant "
        f"in {MOVI_VARIANTS}, e.g. 'movi_e/128x128'.")
  return variant, config


def dataset_dir(name: str, data_dir: str) -> str:
  """Directory of the prepared dataset: <data_dir>/<variant>/<config>/1.0.0."""
  variant, config = parse_name(name)
  return f"{str(data_dir).rstrip('/')}/{variant}/{config}/{MOVI_VERSION}"


def copy_instructions(name: str, data_dir: str) -> str:
  """Commands that put `name` under `data_dir` in the format the pipeline reads."""
  variant, config = parse_name(name)
  target = f"{str(data_dir).rstrip('/')}/{variant}/{config}/"
  return (
      f"Copy the ArrayRecord version locally:\n"
      f"  gsutil -m cp -r gs://kubric-public/grain/{variant}/{config}/{MOVI_VERSION} {target}\n"
      f"(or set data_dir=gs://kubric-public/grain; the official MooG config reads "
      f"movi_e/256x256 from there). Variants/resolutions only published as "
      f"TFRecord must be copied from gs://kubric-public/tfds and converted:\n"
      f"  gsutil -m cp -r gs://kubric-public/tfds/{variant}/{config}/{MOVI_VERSION} {target}\n"
      f"  tfds convert_format --dataset_version_dir={target}{MOVI_VERSION} "
      f"--out_file_format=array_record")


def load_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Read-only builder for a prepared MOVi dataset (no Kubric code needed).

  Args:
    name: e.g. 'movi_e/128x128'.
    data_dir: directory (local or gs://) holding `<variant>/<config>/1.0.0`;
      None = the TFDS default data dir.

  Returns:
    The builder, checked to hold ArrayRecord files.

  Raises:
    FileNotFoundError: the dataset is not there; the message says how to get it.
    ValueError: the dataset is stored only as TFRecord.
  """
  data_dir = data_dir or tfds.core.constants.DATA_DIR
  return prepared.open_array_record_builder(
      dataset_dir(name, data_dir), f"MOVi dataset {name!r} (data_dir={data_dir!r})",
      copy_instructions(name, data_dir))


class _Uint16PngDecoder(tfds.decode.Decoder):
  """Decodes uint16 PNG frames with PIL (TFDS needs OpenCV for these)."""

  def decode_example(self, serialized_example):
    raise NotImplementedError("Only the numpy (data source) path is supported.")

  def decode_example_np(self, serialized_example: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(serialized_example)) as image:
      frame = np.asarray(image, dtype=np.uint16)
    return frame.reshape(frame.shape[:2] + (-1,))

  def decode_batch_example_np(self, serialized_examples) -> np.ndarray:
    return np.stack([self.decode_example_np(x) for x in serialized_examples])


def decode_rgb16_png(data: bytes) -> np.ndarray:
  """A three-channel uint16 PNG frame -> [H, W, 3] uint16.

  PIL keeps only the high byte of 16-bit colour PNGs, so TensorFlow's decoder is used.
  TensorFlow is imported here, not at the top, because the other readers and the records
  path work without it.

  Raises:
    OSError: the bytes are not a PNG (as PIL raises for the other layers).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.decode_png(data, channels=3, dtype=tf.uint16).numpy()
  except tf.errors.InvalidArgumentError as error:
    raise OSError(error.message) from error


class NoDecoding(tfds.decode.Decoder):
  """Leaves a feature as its serialized bytes (for layers nobody reads)."""

  def decode_example(self, serialized_example):
    return serialized_example

  def decode_example_np(self, serialized_example):
    return serialized_example

  def decode_batch_example_np(self, serialized_examples):
    return serialized_examples


def numpy_decoders(features: tfds.features.FeaturesDict) -> dict:
  """Decoders for `as_data_source`: PIL for uint16 images, none for unused layers."""
  decoders = {}
  for key in features.keys():
    if key in _UNDECODED_LAYERS:
      decoders[key] = NoDecoding()
    elif key == "depth":
      decoders[key] = _Uint16PngDecoder()
  return decoders


def data_source(builder: tfds.core.DatasetBuilder, split: str):
  """Random-access source of decoded examples (dicts of numpy arrays / lists)."""
  return builder.as_data_source(split, decoders=numpy_decoders(builder.info.features))
