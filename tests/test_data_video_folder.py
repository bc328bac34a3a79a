"""Video files with official split lists (`videolib/data/video_folder.py`), on small videos
these tests encode with PyAV in UCF101's, HMDB51's and Kinetics-400's layouts."""
import logging
import os

import av
import jax
import ml_collections
import numpy as np
import pytest

from configs import mgtc_tiny
from mgtc import task as mgtc_task
from videolib.data import pipeline
from videolib.data import video_folder

_H, _W = 32, 48
_UCF_CLASSES = ("ApplyEyeMakeup", "Biking", "Diving")
# UCF101 (class, group, frames) per video; group 1 is the test group of split 1 here.
_UCF_VIDEOS = [(c, g, 20 + 3 * i + g) for i, c in enumerate(_UCF_CLASSES) for g in (1, 2, 3)]


def _frames(num_frames: int) -> np.ndarray:
  """Red = 5 * frame index (when in the clip), green = a horizontal ramp (where the crop
  is), blue constant: smooth, so the lossy codec keeps the means (to ~2 levels)."""
  t = np.arange(num_frames)[:, None, None]
  x = np.arange(_W)[None, None, :]
  red = np.broadcast_to(5 * t, (num_frames, _H, _W))
  green = np.broadcast_to(40 + 3 * x, (num_frames, _H, _W))
  blue = np.full((num_frames, _H, _W), 128)
  return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def _write_video(path: str, num_frames: int) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=25)  # UCF101's codec family (Xvid).
    stream.width, stream.height, stream.pix_fmt = _W, _H, "yuv420p"
    stream.bit_rate = 20_000_000
    for frame in _frames(num_frames):
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def _write(path: str, lines) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _ucf_name(class_name, group):
  return f"v_{class_name}_g{group:02d}_c01.avi"


@pytest.fixture(scope="module")
def ucf_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("ucf"))
  for class_name, group, num_frames in _UCF_VIDEOS:
    _write_video(os.path.join(root, "UCF-101", class_name, _ucf_name(class_name, group)),
                 num_frames)
  lists = os.path.join(root, "ucfTrainTestlist")
  _write(os.path.join(lists, "classInd.txt"),
         [f"{i + 1} {c}" for i, c in enumerate(_UCF_CLASSES)])
  _write(os.path.join(lists, "trainlist01.txt"),
         [f"{c}/{_ucf_name(c, g)} {_UCF_CLASSES.index(c) + 1}"
          for c, g, _ in _UCF_VIDEOS if g != 1])
  _write(os.path.join(lists, "testlist01.txt"),
         [f"{c}/{_ucf_name(c, g)}" for c, g, _ in _UCF_VIDEOS if g == 1])
  return root


def _config(data_dir, **overrides) -> ml_collections.ConfigDict:
  config = pipeline.default_data_config()
  config.update(name="videos/ucf101_1", data_dir=data_dir, eval_split="test", num_frames=4,
                frame_stride=2, resolution=16, features=("video", "label"))
  config.update(overrides)
  return config


def test_ucf101_split_lists_give_paths_and_class_index_labels(ucf_dir):
  train = video_folder.entries("videos/ucf101_1", ucf_dir, "train")
  test = video_folder.entries("videos/ucf101_1", ucf_dir, "test")
  assert len(train) == 6 and len(test) == 3
  assert [os.path.basename(e.path) for e in test] == [
      _ucf_name(c, 1) for c in _UCF_CLASSES]
  assert [e.label for e in test] == [0, 1, 2]
  assert all(os.path.isfile(e.path) for e in train + test)


def test_hmdb51_and_kinetics_layouts(tmp_path, caplog):
  hmdb = str(tmp_path / "hmdb")
  for label, class_name in enumerate(("brush_hair", "cartwheel")):
    names = [f"{class_name}_{i}.avi" for i in range(3)]
    for name in names:
      _write_video(os.path.join(hmdb, class_name, name), 12)
    # 1 = train, 2 = test, 0 = unused in this split.
    _write(os.path.join(hmdb, "testTrainMulti_7030_splits", f"{class_name}_test_split1.txt"),
           [f"{names[0]} 1", f"{names[1]} 2", f"{names[2]} 0"])
  train = video_folder.entries("videos/hmdb51_1", hmdb, "train")
  test = video_folder.entries("videos/hmdb51_1", hmdb, "test")
  assert [(os.path.basename(e.path), e.label) for e in train] == [
      ("brush_hair_0.avi", 0), ("cartwheel_0.avi", 1)]
  assert [os.path.basename(e.path) for e in test] == ["brush_hair_1.avi", "cartwheel_1.avi"]

  kinetics = str(tmp_path / "k400")
  header = "label,youtube_id,time_start,time_end,split"
  _write(os.path.join(kinetics, "train.csv"),
         [header, "zumba,aaa,10,20,train", "abseiling,bbb,0,10,train"])
  _write(os.path.join(kinetics, "validate.csv"),
         [header, "zumba,ccc,5,15,val", "abseiling,gone,1,11,val"])
  _write_video(os.path.join(kinetics, "train", "aaa_000010_000020.mp4"), 10)  # Flat (CVDF).
  _write_video(os.path.join(kinetics, "train", "bbb_000000_000010.mp4"), 10)
  _write_video(os.path.join(kinetics, "val", "zumba", "ccc_000005_000015.mp4"), 10)
  train = video_folder.entries("videos/kinetics400", kinetics, "train")
  assert [e.label for e in train] == [1, 0]  # Sorted class names: abseiling, zumba.
  with caplog.at_level(logging.WARNING):
    validation = video_folder.entries("videos/kinetics400", kinetics, "validation")
  assert [(os.path.basename(e.path), e.label) for e in validation] == [
      ("ccc_000005_000015.mp4", 1)]
  assert "1 of 2 listed videos are not below" in caplog.text


def test_missing_lists_and_unknown_names_are_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="holds no 'classInd.txt'"):
    video_folder.entries("videos/ucf101_2", str(tmp_path), "train")
  with pytest.raises(ValueError, match="expected 'videos/ucf101_<1|2|3>'"):
    pipeline.batch_spec(_config(str(tmp_path), name="videos/ucf101_4"), 2)
  with pytest.raises(ValueError, match="only video folders"):
    pipeline.batch_spec(_config(str(tmp_path), name="synthetic_movi/32x32_24f",
                                eval_views=(5, 3)), 2)


def test_train_batches_are_random_windows_crops_and_flips_reproducible_per_seed(ucf_dir):
  config = _config(ucf_dir, random_flip=True)

  def batches(seed, n=3):
    iterator = pipeline.make_train_iterator(config, global_batch_size=2, seed=seed,
                                            process_index=0, process_count=1)
    return [next(iterator) for _ in range(n)]

  first, again = batches(0), batches(0)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["video"], b["video"])
  batch = first[0]
  assert batch["video"].shape == (2, 4, 16, 16, 3) and batch["video"].dtype == np.float32
  assert set(batch["label"]) <= {0, 1, 2}
  clips = np.concatenate([b["video"] for b in first + batches(1)])
  # Red steps by 5 per frame, so a window at stride 2 rises by 10 / 255 per clip frame.
  steps = np.diff(clips[..., 0].mean(axis=(2, 3)), axis=1)
  np.testing.assert_allclose(steps, 10 / 255, atol=5 / 255)
  # Random crops and flips: the green ramp's slope changes sign and size across clips.
  slopes = np.mean(np.diff(clips[:, 0, :, :, 1], axis=-1), axis=(1, 2))
  assert slopes.min() < 0 < slopes.max()


def test_eval_views_are_evenly_spaced_clips_times_crops_along_the_long_side(ucf_dir):
  config = _config(ucf_dir, eval_views=(2, 3))
  batch = next(iter(pipeline.make_eval_iterator(config, global_batch_size=3,
                                                process_index=0, process_count=1)))
  views = batch["video_views"]
  assert views.shape == (3, 6, 4, 16, 16, 3)
  np.testing.assert_array_equal(batch["video"], views[:, 3])
  first_frames = views[0, :, 0, ..., 0].mean(axis=(-2, -1)) * 255 / 5  # Frame index.
  num_frames = dict(((c, g), n) for c, g, n in _UCF_VIDEOS)[(_UCF_CLASSES[0], 1)]
  last_start = num_frames - 7  # The span of 4 frames at stride 2 is 7.
  np.testing.assert_allclose(first_frames, [0, 0, 0] + [last_start] * 3, atol=0.5)
  green = views[0, :3, 0, ..., 1].mean(axis=(-2, -1))  # Left, centre, right squares.
  assert green[0] < green[1] < green[2]


def test_unreadable_video_is_skipped_in_training_and_an_error_in_evaluation(ucf_dir, tmp_path):
  root = str(tmp_path / "broken")
  os.makedirs(root)
  os.symlink(os.path.join(ucf_dir, "UCF-101"), os.path.join(root, "UCF-101"))
  bad = "Biking/v_Biking_g09_c01.avi"
  _write(os.path.join(root, "UCF-101-extra", bad), ["not a video"])
  lists = os.path.join(root, "ucfTrainTestlist")
  _write(os.path.join(lists, "classInd.txt"),
         [f"{i + 1} {c}" for i, c in enumerate(_UCF_CLASSES)])
  _write(os.path.join(lists, "trainlist01.txt"),
         [f"{bad} 2"] + [f"{c}/{_ucf_name(c, g)} 1" for c, g, _ in _UCF_VIDEOS if g != 1])
  _write(os.path.join(lists, "testlist01.txt"), [bad])
  config = _config(root)
  before = video_folder.skipped_count()
  iterator = pipeline.make_train_iterator(config, global_batch_size=2, seed=0,
                                          process_index=0, process_count=1)
  for _ in range(4):  # 4 batches of 2 from 7 videos: the broken one comes up.
    assert next(iterator)["video"].shape == (2, 4, 16, 16, 3)
  assert video_folder.skipped_count() > before
  with pytest.raises(video_folder.UnreadableVideoError, match="v_Biking_g09_c01.avi"):
    next(iter(pipeline.make_eval_iterator(config, global_batch_size=1, process_index=0,
                                          process_count=1)))


def test_mgtc_classifier_averages_the_pipeline_views(ucf_dir):
  config = mgtc_tiny.get_config()
  config.data.update(name="videos/ucf101_1", data_dir=ucf_dir, eval_split="test",
                     num_frames=4, frame_stride=2, resolution=16, eval_views=(2, 3),
                     features=("video", "label"))
  config.model.update(num_frames=4, image_size=16, patch_size=8, width=16, depth=1,
                      num_heads=2, num_classes=101)
  task = mgtc_task.make_task(config)
  task.validate_config(config)
  batch = next(iter(pipeline.make_eval_iterator(config.data, global_batch_size=3,
                                                process_index=0, process_count=1)))
  params = task.init(jax.random.key(0), batch)
  metrics = jax.jit(task.eval_fn)(params, batch, jax.random.key(1))
  views = batch["video_views"].reshape((-1,) + batch["video_views"].shape[2:])
  probabilities = jax.nn.softmax(task.logits(params, views, train=False)).reshape(3, 6, -1)
  expected = np.mean(np.argmax(probabilities.mean(axis=1), -1) == batch["label"])
  total, count = metrics["top_1"]
  assert count == 3 and total / count == pytest.approx(expected)
  assert metrics["gflops_per_video"][0] == pytest.approx(6 * metrics["gflops_per_view"][0])
