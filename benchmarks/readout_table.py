r"""Prints the MooG vs Grid vs Grid Rec. table (docs/results.md) from readout_table.sh's runs.

  python benchmarks/readout_table.py --out_dir=runs/readout_table

`<out_dir>/seed<S>/` holds, per backbone B, `pretrain_B/`, `readout_B/` (their
`metrics.jsonl`) and `attention_B.json` (benchmarks/attention_point_tracking.py). Every
metric is given as mean ± std over the seeds (sample std, n - 1), next to the trivial
baselines scored on the same queries in the same evaluations. A backbone *beats* a
baseline on a metric when its mean is better by more than 3 standard deviations of the
backbone's seeds and by more than `MIN_MARGIN` (heads that stay on their never-moving
anchor differ from it in the fourth decimal with a near-zero spread over seeds: a tie,
not a win). Also writes `<out_dir>/readout_table.json` with every number.
"""

import glob
import json
import os

from absl import app
from absl import flags
import numpy as np

BACKBONES = {'moog': 'MooG', 'grid': 'Grid', 'grid_rec': 'Grid Rec.'}
# (column, readout metric, trivial baseline metric, higher is better).
COLUMNS = (
    ('AJ', 'points_first/average_jaccard', 'static_points_first/average_jaccard', True),
    ('< δ', 'points_first/average_pts_within_thresh',
     'static_points_first/average_pts_within_thresh', True),
    ('OA', 'points_first/occlusion_accuracy', 'static_points_first/occlusion_accuracy', True),
    ('box mIoU', 'boxes/box_iou', 'static_boxes/box_iou', True),
    ('AbsRel', 'depth/abs_rel', 'constant_depth/abs_rel', False),
)
TRACKER_COLUMN = 'attention tracker AJ'
MIN_MARGIN = 0.005  # Smallest difference from a baseline that counts as better.


def _records(path: str, split: str) -> list[dict]:
  with open(path) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def _wall_clock_minutes(path: str) -> float:
  """Training time of a run from its logged rates: sum of steps / (steps per second)."""
  train = _records(path, 'train')
  seconds, previous = 0.0, 0
  for record in train:
    seconds += (record['step'] - previous) / record['steps_per_sec']
    previous = record['step']
  return seconds / 60


def collect(out_dir: str) -> dict:
  """{backbone: {column: [per-seed values]}, plus the baselines and per-seed details}."""
  table = {backbone: {} for backbone in BACKBONES}
  baselines, seeds = {}, []
  for seed_dir in sorted(glob.glob(os.path.join(out_dir, 'seed*'))):
    seed = int(os.path.basename(seed_dir)[len('seed'):])
    complete = all(
        os.path.exists(os.path.join(seed_dir, f'readout_{b}', 'metrics.jsonl'))
        and os.path.exists(os.path.join(seed_dir, f'attention_{b}.json'))
        and _records(os.path.join(seed_dir, f'readout_{b}', 'metrics.jsonl'), 'validation')
        for b in BACKBONES)
    if not complete:
      continue
    seeds.append(seed)
    for backbone in BACKBONES:
      final = _records(os.path.join(seed_dir, f'readout_{backbone}', 'metrics.jsonl'),
                       'validation')[-1]
      pretrain_log = os.path.join(seed_dir, f'pretrain_{backbone}', 'metrics.jsonl')
      pretrain = _records(pretrain_log, 'validation')[-1]
      with open(os.path.join(seed_dir, f'attention_{backbone}.json')) as f:
        tracker = json.load(f)
      row = table[backbone]
      for column, key, baseline_key, _ in COLUMNS:
        row.setdefault(column, []).append(final[key])
        baselines.setdefault(column, []).append(final[baseline_key])
      row.setdefault(TRACKER_COLUMN, []).append(tracker['attention_tracks']['average_jaccard'])
      baselines.setdefault(TRACKER_COLUMN, []).append(
          tracker['never_moving']['average_jaccard'])
      row.setdefault('pretrain steps', []).append(pretrain['step'])
      row.setdefault('pretrain PSNR', []).append(pretrain['psnr_frames_1plus'])
      row.setdefault('pretrain mean-colour PSNR', []).append(pretrain['psnr_mean_colour'])
      row.setdefault('pretrain repeat PSNR', []).append(
          pretrain['psnr_repeat_previous_frame'])
      row.setdefault('pretrain minutes', []).append(_wall_clock_minutes(pretrain_log))
  return dict(seeds=seeds, backbones=table, baselines=baselines)


def mean_std(values: list[float]) -> tuple[float, float]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float('nan')


def beats(values: list[float], baseline: float, higher_is_better: bool) -> bool:
  """Better than `baseline` by more than 3 standard deviations of `values` and MIN_MARGIN."""
  mean, std = mean_std(values)
  margin = mean - baseline if higher_is_better else baseline - mean
  return bool(margin > max(3 * std, MIN_MARGIN))


def markdown(collected: dict) -> str:
  """The table as markdown: one row per backbone, one for the trivial baselines."""
  columns = [c[0] for c in COLUMNS] + [TRACKER_COLUMN]
  higher = {c[0]: c[3] for c in COLUMNS} | {TRACKER_COLUMN: True}
  lines = ['| model | pretrain PSNR (dB) | ' + ' | '.join(columns) + ' |',
           '|---|---|' + '---|' * len(columns)]
  baseline = {c: mean_std(v)[0] for c, v in collected['baselines'].items()}
  for backbone, name in BACKBONES.items():
    row = collected['backbones'][backbone]
    cells = ['{:.2f} ± {:.2f}'.format(*mean_std(row['pretrain PSNR']))]
    for column in columns:
      mean, std = mean_std(row[column])
      mark = ' ✓' if beats(row[column], baseline[column], higher[column]) else ''
      cells.append(f'{mean:.4f} ± {std:.4f}{mark}')
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  mean_colour = mean_std(collected['backbones']['moog']['pretrain mean-colour PSNR'])[0]
  repeat = mean_std(collected['backbones']['moog']['pretrain repeat PSNR'])[0]
  cells = [f'mean colour {mean_colour:.2f}, repeat {repeat:.2f}']
  cells += [f'{baseline[c]:.4f}' for c in columns]
  lines.append('| never-moving point / box, constant depth | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  out_dir = flags.FLAGS.out_dir
  collected = collect(out_dir)
  if not collected['seeds']:
    raise app.UsageError(f'No complete seed under {out_dir}; run readout_table.sh.')
  print(f"Seeds {collected['seeds']}; mean ± std over seeds; ✓: better than the trivial "
        f'baseline by more than 3 std and {MIN_MARGIN}.\n')
  print(markdown(collected))
  minutes = {BACKBONES[b]: round(mean_std(r['pretrain minutes'])[0], 1)
             for b, r in collected['backbones'].items()}
  print(f'\nPretraining wall-clock (minutes, mean over seeds): {minutes}')
  with open(os.path.join(out_dir, 'readout_table.json'), 'w') as f:
    json.dump(collected, f, indent=2)


if __name__ == '__main__':
  # Defined only when this runs as a script, so tests can import the functions.
  flags.DEFINE_string('out_dir', 'runs/readout_table', 'Directory of the runs.')
  app.run(main)
