r"""Prints the readout results table (docs/readout_results.md) from the runs of readout_table.sh.

  python benchmarks/readout_table.py --out_dir=/tmp/readout_table

For every backbone: the pretraining budget, the readout budget, and the frozen-readout
metrics on the synthetic validation split at 8 frames (the training run's final eval) and
on whole 24-frame videos in 8-frame slices (`--mode=eval`); the trivial baselines come
from the same evaluations (identical for every backbone). Also writes
`<out_dir>/readout_table.json` with every number and its protocol.
"""

import glob
import json
import os

from absl import app
from absl import flags

_OUT_DIR = flags.DEFINE_string('out_dir', '/tmp/readout_table', 'Directory of the runs.')

BACKBONES = {'moog': 'MooG', 'grid': 'Grid', 'grid_rec': 'Grid Rec.'}
COLUMNS = (
    ('AJ first', 'points_first/average_jaccard'),
    ('<δ first', 'points_first/average_pts_within_thresh'),
    ('OA first', 'points_first/occlusion_accuracy'),
    ('AJ strided', 'points_strided/average_jaccard'),
    ('AbsRel', 'depth/abs_rel'),
    ('δ<1.25', 'depth/delta_1.25'),
    ('box mIoU', 'boxes/box_iou'),
)
TRIVIAL = {
    'points_first/average_jaccard': 'static_points_first/average_jaccard',
    'points_first/average_pts_within_thresh': 'static_points_first/average_pts_within_thresh',
    'points_first/occlusion_accuracy': 'static_points_first/occlusion_accuracy',
    'points_strided/average_jaccard': 'static_points_strided/average_jaccard',
    'depth/abs_rel': 'constant_depth/abs_rel',
    'depth/delta_1.25': 'constant_depth/delta_1.25',
    'boxes/box_iou': 'static_boxes/box_iou',
}


def _records(path, split):
  with open(path) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def _saved_config(workdir):
  step_dirs = sorted(glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')),
                     key=lambda d: int(os.path.basename(d)))
  with open(os.path.join(step_dirs[-1], 'config', 'metadata')) as f:
    return json.load(f)


def _row(name, metrics):
  cells = ' | '.join('—' if metrics.get(key) is None else f'{metrics[key]:.3f}'
                     for _, key in COLUMNS)
  return f'| {name} | {cells} |'


def main(argv):
  del argv
  out = _OUT_DIR.value
  rows, table = {}, {}
  for backbone, name in BACKBONES.items():
    readout_dir = os.path.join(out, f'readout_{backbone}')
    if not os.path.isdir(readout_dir):
      continue
    config = _saved_config(readout_dir)
    pretrain = _records(os.path.join(out, f'pretrain_{backbone}', 'metrics.jsonl'),
                        'validation')[-1]
    # The training run's own final eval comes first; `--mode=eval` appends its records.
    evals = {'8 frames, one pass': _records(os.path.join(readout_dir, 'metrics.jsonl'),
                                            'validation')[0]}
    for path in glob.glob(os.path.join(readout_dir, 'eval_validation_step*.json')):
      with open(path) as f:
        evals['24 frames, 8-frame slices'] = json.load(f)
    table[backbone] = dict(
        backbone=backbone, features=config['readout']['features'],
        finetune=config['readout']['finetune'],
        pretrain_steps=pretrain['step'], pretrain_psnr_frames_1plus=pretrain['psnr_frames_1plus'],
        readout_steps=config['num_train_steps'], batch_size=config['batch_size'],
        resolution=config['data']['resolution'], evals=evals)
    for protocol, metrics in evals.items():
      rows.setdefault(protocol, []).append(
          _row(f'{name} ({config["readout"]["features"]}, frozen)', metrics))
      rows[protocol + ' trivial'] = [_row(
          'never-moving point / box, constant depth',
          {key: metrics.get(trivial) for key, trivial in TRIVIAL.items()})]
  header = '| model | ' + ' | '.join(c for c, _ in COLUMNS) + ' |'
  for protocol in ('8 frames, one pass', '24 frames, 8-frame slices'):
    if protocol not in rows:
      continue
    print(f'\n**{protocol}**\n')
    print(header)
    print('|' + '---|' * (len(COLUMNS) + 1))
    print('\n'.join(rows[protocol] + rows[protocol + ' trivial']))
  with open(os.path.join(out, 'readout_table.json'), 'w') as f:
    json.dump(table, f, indent=2)


if __name__ == '__main__':
  app.run(main)
