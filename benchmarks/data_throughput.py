r"""Input pipeline throughput (per-host batches per second) on synthetic_movi, MOVi or videos.

  /work/venv/bin/python benchmarks/data_throughput.py --data_dir=/tmp/tfds_bench

MOVi-layout data without the real dataset: write the ray-traced stand-in with
`python -m videolib.data.write_movi_testing --data_dir=D --size=128` and pass
`--name=movi_e/128x128 --data_dir=D --resolution=128`.

Video files (`videolib/data/video_folder.py`) without the real dataset: `--write_videos=N`
encodes N UCF101-like videos (320 x 240, 25 fps, 7 s, MPEG-4 Part 2 in AVI as UCF101's
Xvid files) with the split lists into `--data_dir`, then reads them at VideoMAE's setting:

  python benchmarks/data_throughput.py --write_videos=24 --data_dir=/tmp/ucf_like \
      --name=videos/ucf101_1 --num_frames=16 --frame_stride=4 --resolution=224 \
      --random_crop --random_flip --batch_size=8 --batches=6 --eval_views=5,3

Defaults are the tiny MooG setting: synthetic_movi/32x32_24f, 8-frame windows,
32x32, batch 8, video only, no crop. `--features` / `--random_crop` measure
heavier settings. The first batches (thread start-up) are not timed. Numbers
are in docs/data.md.
"""
import os
import time

from absl import app
from absl import flags
import av
import numpy as np

from videolib.data import pipeline

_NAME = flags.DEFINE_string("name", "synthetic_movi/32x32_24f", "Dataset/config.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Global batch size.")
_FRAMES = flags.DEFINE_integer("num_frames", 8, "Window length.")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Output resolution.")
_FEATURES = flags.DEFINE_list("features", ["video"], "Batch features.")
_CROP = flags.DEFINE_bool("random_crop", False, "Random crops.")
_FLIP = flags.DEFINE_bool("random_flip", False, "Random flips (video files).")
_STRIDE = flags.DEFINE_integer("frame_stride", 1, "Frame stride.")
_EVAL_VIEWS = flags.DEFINE_list("eval_views", None,
                                "clips,crops: also time the eval iterator with these views.")
_WRITE_VIDEOS = flags.DEFINE_integer("write_videos", 0,
                                     "Encode this many UCF101-like videos into --data_dir.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "grain reader threads.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "grain worker processes (0 = none).")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed batches.")
_BATCHES = flags.DEFINE_integer("batches", 200, "Timed batches.")


def write_ucf101_like(data_dir: str, num_videos: int) -> None:
  """Encodes `num_videos` 7-second 320 x 240 videos (a textured square moving over a
  gradient) in UCF101's layout, half in train, half in test, with the split lists."""
  classes = ("ApplyEyeMakeup", "Biking")
  rng = np.random.default_rng(0)
  y, x = np.mgrid[:240, :320]
  train, test = [], []
  for i in range(num_videos):
    class_name = classes[i % 2]
    relative = f"{class_name}/v_{class_name}_g{i // 2 + 1:02d}_c01.avi"
    path = os.path.join(data_dir, "UCF-101", relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    texture = rng.integers(0, 255, (48, 48, 3), np.uint8)
    with av.open(path, "w") as container:
      stream = container.add_stream("mpeg4", rate=25)
      stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
      for t in range(175):
        frame = np.stack([x * 255 // 320, y * 255 // 240, np.full_like(x, 90)], -1)
        top, left = 96 + int(60 * np.sin(t / 20 + i)), 20 + t
        frame[top:top + 48, left:left + 48] = texture
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame.astype(np.uint8),
                                                               format="rgb24")))
      container.mux(stream.encode())
    (test if i % 4 >= 2 else train).append(f"{relative} {i % 2 + 1}")
  lists = os.path.join(data_dir, "ucfTrainTestlist")
  os.makedirs(lists, exist_ok=True)
  for file_name, lines in (("classInd.txt", ["1 ApplyEyeMakeup", "2 Biking"]),
                           ("trainlist01.txt", train),
                           ("testlist01.txt", [line.split()[0] for line in test])):
    with open(os.path.join(lists, file_name), "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")


def _time_eval(config) -> None:
  config.eval_views = tuple(int(v) for v in _EVAL_VIEWS.value)
  config.eval_split = "test"
  iterator = pipeline.make_eval_iterator(config, global_batch_size=_BATCH.value,
                                         process_index=0, process_count=1)
  start = time.perf_counter()
  videos = sum(int(batch["_mask"].sum()) for batch in iterator)
  seconds = time.perf_counter() - start
  clips, crops = config.eval_views
  print(f"eval {config.name} views={clips}x{crops}: {videos / seconds:.2f} videos/s "
        f"({videos * clips * crops / seconds:.1f} view clips/s) over {videos} videos")


def main(argv):
  del argv
  if _WRITE_VIDEOS.value:
    write_ucf101_like(_DATA_DIR.value, _WRITE_VIDEOS.value)
  config = pipeline.default_data_config()
  config.update(name=_NAME.value, data_dir=_DATA_DIR.value, num_frames=_FRAMES.value,
                frame_stride=_STRIDE.value, resolution=_RESOLUTION.value,
                features=tuple(_FEATURES.value), random_crop=_CROP.value,
                random_flip=_FLIP.value, num_threads=_THREADS.value,
                worker_count=_WORKERS.value)
  iterator = pipeline.make_train_iterator(config, global_batch_size=_BATCH.value, seed=0,
                                          process_index=0, process_count=1)
  for _ in range(_WARMUP.value):
    next(iterator)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(iterator)
  seconds = time.perf_counter() - start
  print(f"{config.name} batch={_BATCH.value} T={_FRAMES.value} res={_RESOLUTION.value} "
        f"features={config.features} random_crop={_CROP.value} "
        f"threads={_THREADS.value} workers={_WORKERS.value}: "
        f"{_BATCHES.value / seconds:.1f} batches/s "
        f"({_BATCHES.value * _BATCH.value / seconds:.1f} examples/s)")
  if _EVAL_VIEWS.value:
    _time_eval(config)


if __name__ == "__main__":
  app.run(main)
