"""benchmarks/readout_table.py: seeds aggregated as mean ± std, the 3-std rule, the table."""
import json

import numpy as np
import pytest

import benchmark_scripts

readout_table = benchmark_scripts.load("readout_table")


def _write_seed(root, seed, aj_by_backbone):
  """One complete seed directory with the logs readout_table.sh leaves."""
  for backbone, aj in aj_by_backbone.items():
    pretrain = root / f"seed{seed}" / f"pretrain_{backbone}"
    readout = root / f"seed{seed}" / f"readout_{backbone}"
    pretrain.mkdir(parents=True)
    readout.mkdir(parents=True)
    (pretrain / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 100, "split": "train", "steps_per_sec": 2.0},
        {"step": 300, "split": "train", "steps_per_sec": 4.0},
        {"step": 300, "split": "validation", "psnr_frames_1plus": 20.0 + seed,
         "psnr_mean_colour": 17.5, "psnr_repeat_previous_frame": 21.3}]) + "\n")
    final = {"step": 50, "split": "validation",
             "points_first/average_jaccard": aj, "static_points_first/average_jaccard": 0.4,
             "points_first/average_pts_within_thresh": 0.6,
             "static_points_first/average_pts_within_thresh": 0.5,
             "points_first/occlusion_accuracy": 0.9,
             "static_points_first/occlusion_accuracy": 0.8,
             "boxes/box_iou": 0.7, "static_boxes/box_iou": 0.6,
             "depth/abs_rel": 0.1, "constant_depth/abs_rel": 0.3}
    (readout / "metrics.jsonl").write_text(json.dumps(final) + "\n")
    (root / f"seed{seed}" / f"attention_{backbone}.json").write_text(json.dumps({
        "attention_tracks": {"average_jaccard": aj - 0.1},
        "never_moving": {"average_jaccard": 0.4}}))


def test_table_aggregates_seeds_and_marks_only_margins_beyond_three_std(tmp_path):
  _write_seed(tmp_path, 0, {"moog": 0.50, "grid": 0.41, "grid_rec": 0.45})
  _write_seed(tmp_path, 1, {"moog": 0.52, "grid": 0.45, "grid_rec": 0.47})
  (tmp_path / "seed2" / "pretrain_moog").mkdir(parents=True)  # Incomplete: left out.
  collected = readout_table.collect(str(tmp_path))
  assert collected["seeds"] == [0, 1]
  moog = collected["backbones"]["moog"]
  assert moog["AJ"] == [0.50, 0.52]
  # 100 steps at 2/s plus 200 at 4/s: 100 s.
  assert moog["pretrain minutes"] == [pytest.approx(100 / 60)] * 2
  mean, std = readout_table.mean_std(moog["AJ"])
  assert mean == pytest.approx(0.51) and std == pytest.approx(np.std([0.5, 0.52], ddof=1))
  # MooG: 0.51 - 0.4 = 0.11 > 3 * 0.014; Grid: 0.43 - 0.4 = 0.03 < 3 * 0.028.
  assert readout_table.beats(moog["AJ"], 0.4, higher_is_better=True)
  assert not readout_table.beats(collected["backbones"]["grid"]["AJ"], 0.4, True)
  assert readout_table.beats([0.1, 0.12], 0.3, higher_is_better=False)  # AbsRel: lower wins.
  # A head on its never-moving anchor: 1e-4 above it with no spread is a tie.
  assert not readout_table.beats([0.2750, 0.2750, 0.2750], 0.2749, higher_is_better=True)
  table = readout_table.markdown(collected)
  assert "| MooG | 20.50 ± 0.71 | 0.5100 ± 0.0141 ✓ |" in table
  assert "| Grid | 20.50 ± 0.71 | 0.4300 ± 0.0283 |" in table
  assert "| never-moving point / box, constant depth | mean colour 17.50, repeat 21.30 | 0.4000 |" in table
