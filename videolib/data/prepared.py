"""Opening a prepared TFDS dataset directory for the grain pipeline (MOVi, UCF101)."""

from etils import epath
import tensorflow_datasets as tfds


def open_array_record_builder(
    path: str, description: str, instructions: str
) -> tfds.core.DatasetBuilder:
  """Read-only builder of the TFDS dataset version directory `path`.

  Args:
    path: `<data_dir>/<dataset>/<config>/<version>`.
    description: what the dataset is, for messages (e.g. "MOVi dataset 'movi_e/128x128'").
    instructions: how to get or prepare it, appended to every error.

  Returns:
    The builder, checked to hold ArrayRecord files.

  Raises:
    FileNotFoundError: no `dataset_info.json` under `path`.
    ValueError: the dataset is stored only in another format (e.g. TFRecord).
  """
  if not epath.Path(path, "dataset_info.json").exists():
    raise FileNotFoundError(
        f"{description} not found: no {path}/dataset_info.json.\n{instructions}")
  builder = tfds.builder_from_directory(path)
  formats = [builder.info.file_format] + list(
      getattr(builder.info, "alternative_file_formats", []))
  if tfds.core.FileFormat.ARRAY_RECORD not in formats:
    raise ValueError(
        f"{description} at {path} is stored as {formats[0].value}; the grain pipeline "
        f"needs array_record.\n{instructions}")
  return builder
