"""The side-by-side table of benchmarks/moog_vs_official.py."""

import benchmark_scripts

moog_vs_official = benchmark_scripts.load("moog_vs_official")


def _record(side, options, step, forward):
  return dict(side=side, config="tiny", project_xla_options=options,
              train_step_seconds=step, forward_seconds=forward)


def test_table_pairs_each_side_as_shipped_then_with_equal_options():
  records = [_record("official", False, 4.0, 1.0), _record("ours", True, 2.5, 0.5),
             _record("official", True, 3.0, 0.6), _record("ours", False, 4.4, 0.8)]
  rows = moog_vs_official.table(records, ["tiny"]).splitlines()[2:]
  assert len(rows) == 3
  cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
  # As shipped: official with XLA's defaults against ours with the project's options.
  assert cells[0][1:3] == ["XLA defaults", "project's (no YNN fusions)"]
  assert cells[0][3:] == ["4.00", "2.50", "1.60x", "1.00", "0.50", "2.00x"]
  assert cells[1][3:6] == ["3.00", "2.50", "1.20x"]  # Both with the project's options.
  assert cells[2][3:6] == ["4.00", "4.40", "0.91x"]  # Both with XLA's defaults.


def test_table_leaves_out_pairs_that_did_not_run():
  records = [_record("official", False, 4.0, 1.0), _record("ours", True, 2.5, 0.5)]
  assert len(moog_vs_official.table(records, ["tiny", "paper"]).splitlines()) == 3
