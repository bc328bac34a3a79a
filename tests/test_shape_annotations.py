"""The jaxtyping shape annotations are checked, not decorative.

`tests/shape_annotation_check.py` installs jaxtyping's import hook (beartype) in a fresh
interpreter, then traces MooG, Grid and Grid Rec. pretraining, both readout heads, the
released-head architectures, their losses, metrics and summaries; every annotated
function checks its arguments and results while they are traced. It also checks that a
wrong shape is refused.
"""

import os
import subprocess
import sys

_SCRIPT = os.path.join(os.path.dirname(__file__), "shape_annotation_check.py")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_traced_annotation_holds_and_a_wrong_shape_is_refused():
  env = dict(os.environ, PYTHONPATH=_REPO, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, _SCRIPT], capture_output=True, text=True,
                          env=env, cwd=_REPO, timeout=300, check=False)
  assert result.returncode == 0, result.stdout + result.stderr[-4000:]
  printed = result.stdout.split()
  for program in ("moog", "grid", "grid_rec", "recurrent", "correlation", "points", "boxes"):
    assert program in printed, result.stdout
  assert "refused" in result.stdout and printed[-1] == "checked", result.stdout
