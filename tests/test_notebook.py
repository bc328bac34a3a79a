"""Executes `colabs/moog_readouts.ipynb` end to end in a fresh kernel, with tiny parameters.

Parameters are injected papermill-style: a cell tagged `injected-parameters` right after
the cell tagged `parameters`. Any cell error fails the test (nbclient raises
`CellExecutionError` naming the cell and the traceback). Every path the notebook writes
is under the test's own `tmp_path`, and the kernel picks free ports itself, so the test
runs in parallel with anything under pytest-xdist. The kernel is this interpreter and
inherits this process's environment, i.e. the 8 simulated CPU devices and the compilation
cache of `conftest.py`. Measured on a 2-core CPU: about 90 s with a cold compilation
cache, 30 s with a warm one; section 5 (released-Ego4D heads, tiny random weights) adds
about 6 s warm.
"""

import json
import math
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

from moog import notebook_utils
from moog.released import ego4d

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / 'colabs' / 'moog_readouts.ipynb'

# Readout rows of `moog.notebook_utils.METRIC_ROWS`, all of which the tiny run reports.
EXPECTED_ROWS = 9


def this_interpreters_kernel(tmp_path, monkeypatch) -> str:
  """A kernelspec running this Python, found first on JUPYTER_PATH; returns its name.

  A `python3` kernelspec in the user's Jupyter directory would otherwise win over this
  environment's, and could be another interpreter without the project installed.
  """
  name = 'offgrid-video-test'
  spec_dir = tmp_path / 'jupyter' / 'kernels' / name
  spec_dir.mkdir(parents=True)
  (spec_dir / 'kernel.json').write_text(json.dumps(dict(
      argv=[sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      display_name=name, language='python')))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  return name


def inject_parameters(notebook, parameters: dict) -> None:
  """Inserts `NAME = value` lines after the `parameters` cell, as papermill does."""
  index = next(i for i, cell in enumerate(notebook.cells)
               if 'parameters' in cell.metadata.get('tags', []))
  defined = {line.split('=')[0].strip() for line in notebook.cells[index].source.splitlines()
             if '=' in line}
  unknown = sorted(set(parameters) - defined)
  assert not unknown, f'Not parameters of the notebook: {unknown}'
  source = '\n'.join(f'{name} = {value!r}' for name, value in parameters.items())
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata['tags'] = ['injected-parameters']
  notebook.cells.insert(index + 1, cell)


def cell_text(cell) -> str:
  return ''.join(output.get('text', '') for output in cell.get('outputs', [])
                 if output.get('output_type') == 'stream')


def parse_metrics_table(text: str) -> dict[str, tuple[float, float]]:
  """{row name: (readout, baseline)} from `notebook_utils.format_metrics_table` output."""
  rows = {}
  for line in text.strip().splitlines()[1:]:
    name, numbers = line.split('  ', 1)
    readout, baseline = numbers.split()[:2]
    rows[name.strip()] = (float(readout), float(baseline))
  return rows


def test_parse_metrics_table_reads_nan_as_nan():
  rows = parse_metrics_table('metric  readout  baseline  trivial baseline\n'
                             'boxes mIoU     0.500       nan  never-moving box\n')
  assert rows['boxes mIoU'][0] == 0.5 and math.isnan(rows['boxes mIoU'][1])


def test_stored_notebook_has_no_outputs_and_a_parameters_cell():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  assert all(not cell.outputs and cell.execution_count is None for cell in code)
  (parameters,) = [cell for cell in code if 'parameters' in cell.metadata.get('tags', [])]
  # The default quick-run split is the helpers' (the parameters cell cannot import it).
  assert f"DATASET = '{notebook_utils.QUICK_DATASET}'" in parameters.source


def test_notebook_executes_end_to_end_with_tiny_parameters(tmp_path, monkeypatch):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Section 5 on random weights in the released key layout at `moog.released.ego4d.tiny_config()`
  # sizes (8 frames of 32x32: the quick runs' validation videos, EGO4D_DATASET='').
  released = ego4d.write_random_released_files(ego4d.tiny_config(), str(tmp_path / 'ego4d'))
  inject_parameters(notebook, dict(
      PRETRAIN_STEPS=2, READOUT_STEPS=2, NUM_VIDEOS=4, PLOT_VIDEOS=1,
      DATASET='synthetic_movi/32x32_8f_train16_val8',
      WORK_ROOT=str(tmp_path / 'runs'), DATA_DIR=str(tmp_path / 'tfds'),
      EGO4D_BACKBONE_NPZ=released['backbone'], EGO4D_POINT_HEAD_NPZ=released['point_head'],
      EGO4D_BOX_HEAD_NPZ=released['box_head'], EGO4D_DATASET='', EGO4D_SIZES='tiny'))
  client = NotebookClient(notebook, timeout=600,
                          kernel_name=this_interpreters_kernel(tmp_path, monkeypatch),
                          resources={'metadata': {'path': str(tmp_path)}})
  client.execute()  # Raises CellExecutionError on the first failing cell.

  (metrics_cell,) = [cell for cell in notebook.cells
                     if 'metrics' in cell.metadata.get('tags', [])]
  rows = parse_metrics_table(cell_text(metrics_cell))
  assert len(rows) == EXPECTED_ROWS, rows
  for name, values in rows.items():
    assert all(math.isfinite(v) for v in values), (name, values)
  for name in ('points (first) AJ', 'depth δ<1.25', 'boxes mIoU'):
    assert all(0.0 <= v <= 1.0 for v in rows[name]), (name, rows[name])

  images = [output for cell in notebook.cells for output in cell.get('outputs', [])
            if 'image/png' in output.get('data', {})]
  assert len(images) == 4  # Points, boxes, depth of one video; the released heads.
  (ego4d_cell,) = [cell for cell in notebook.cells if 'ego4d' in cell.metadata.get('tags', [])]
  assert 'ego4d outputs finite: True' in cell_text(ego4d_cell), cell_text(ego4d_cell)
  assert "'points': (" in cell_text(ego4d_cell) and "'boxes': (8," in cell_text(ego4d_cell)
  loaded = [cell for cell in notebook.cells if 'readout backbone == MooG' in cell_text(cell)]
  assert loaded and 'readout backbone == MooG checkpoint: True' in cell_text(loaded[0])
