"""Metric writing: TensorBoard event files and a JSON-lines file, from process 0 only.

Every logged record lands in both sinks: `<workdir>/metrics.jsonl` gets one JSON object per
call (`step`, `split`, then the values), TensorBoard gets `<split>/<name>` scalars. Videos
are written as TensorBoard image strips and as GIF files under `<workdir>/summaries/`.
Other processes get a writer that does nothing, so call sites need no `if`.

A resumed run logs again the steps after its checkpoint. `metrics.jsonl` drops the old
records (`train.drop_metric_records_after`); for TensorBoard the writer is opened with
`purge_step` (tensorboardX): it writes a SessionLog START event there, and TensorBoard
discards every earlier event at or after that step, so each step shows once.
"""

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from PIL import Image
import tensorboardX


MIN_GIF_SIDE = 128  # Pixels: summary GIFs of smaller videos are upscaled to this.


def write_gif(path: str, frames: np.ndarray, fps: float) -> None:
  """Writes `[T, H, W, 3]` uint8 frames as a looping GIF (Pillow; no ffmpeg needed)."""
  images = [Image.fromarray(frame) for frame in np.asarray(frames, np.uint8)]
  images[0].save(
      path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
  )


def _to_python(value: Any) -> Any:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


def format_eval_line(step: int, split: str, values: Mapping[str, float]) -> str:
  """One console line of evaluation results, e.g. `eval step 500 (validation): psnr 18.2, ...`.

  Names are sorted, so a metric and its baselines (`psnr_*`, `static_*`) stand together.
  """
  parts = ", ".join(f"{name} {float(value):.4g}" for name, value in sorted(values.items()))
  return f"eval step {step} ({split}): {parts}"


class MetricWriter:
  """Writes scalars and videos for one run directory.

  Args:
    workdir: the run directory.
    purge_step: if set, TensorBoard forgets the events this run wrote earlier at steps
      >= purge_step (a resumed run passes its checkpoint step + 1).
    enabled: write (default: on process 0 only).
  """

  def __init__(self, workdir: str, *, purge_step: int | None = None,
               enabled: bool | None = None):
    self._enabled = jax.process_index() == 0 if enabled is None else enabled
    self._workdir = workdir
    if self._enabled:
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
      # tensorboardX names event files by the second and opens them with 'wb': the
      # nanosecond suffix keeps two writers of one second apart, in creation order.
      self._tensorboard = tensorboardX.SummaryWriter(
          os.path.join(workdir, "tensorboard"), purge_step=purge_step,
          filename_suffix=f".{time.time_ns()}")

  def write_scalars(self, step: int, scalars: Mapping[str, Any], *, split: str = "train"):
    if not self._enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({name: _to_python(value) for name, value in scalars.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      if np.ndim(value) == 0:
        self._tensorboard.add_scalar(f"{split}/{name}", float(value), int(step))
    self._tensorboard.flush()

  def write_videos(self, step: int, videos: Mapping[str, np.ndarray], *, fps: float = 6.0):
    """Writes each `[b, T, H, W, 3]` uint8 video as a GIF and a TensorBoard strip.

    The GIF puts batch elements side by side, upscaled (nearest neighbour) to at least
    `MIN_GIF_SIDE` pixels per element so that a 32x32 video is visible in any viewer. The
    strip puts frames side by side and batch elements underneath, so one image shows the
    whole clip.
    """
    if not self._enabled:
      return
    out_dir = os.path.join(self._workdir, "summaries")
    os.makedirs(out_dir, exist_ok=True)
    for name, video in videos.items():
      video = np.asarray(video)
      b, t, h, w, c = video.shape
      grid = video.transpose(1, 2, 0, 3, 4).reshape(t, h, b * w, c)
      scale = max(1, -(-MIN_GIF_SIDE // min(h, w)))
      grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
      write_gif(os.path.join(out_dir, f"{name}_{int(step):08d}.gif"), grid, fps)
      strip = video.transpose(0, 2, 1, 3, 4).reshape(b * h, t * w, c)
      self._tensorboard.add_image(name, strip, int(step), dataformats="HWC")
    self._tensorboard.flush()

  def close(self):
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()
