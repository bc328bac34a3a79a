"""Runs a recurrent model over a long video in temporal slices that carry its state.

MooG and its recurrent readouts are causal and carry a state from frame to frame, so a
video of any length can be processed slice by slice: the state at the end of slice k is
the initial state of slice k + 1, and the outputs equal those of one pass over the
whole video (tested in `tests/test_sliced_eval.py`). `scan_slices` runs the slices in a
`jax.lax.scan`, so peak memory is that of one slice: a 24-frame (or longer) evaluation
needs the activations of `slice_frames` frames only.
"""

from collections.abc import Callable
from typing import Any

import einops
import jax
import jax.numpy as jnp

PyTree = Any
SliceFn = Callable[[PyTree, PyTree, jax.Array], tuple[PyTree, PyTree]]


def check_slice_frames(num_frames: int, slice_frames: int) -> int:
  """Returns the number of slices; raises ValueError unless `slice_frames` divides T.

  Args:
    num_frames: video length T.
    slice_frames: frames per slice; 0 means one slice of T frames.
  """
  slice_frames = slice_frames or num_frames
  if slice_frames < 1 or num_frames % slice_frames:
    raise ValueError(
        f'slice_frames={slice_frames} must be >= 1 and divide the number of frames '
        f'{num_frames}.'
    )
  return num_frames // slice_frames


def scan_slices(
    apply_slice: SliceFn,
    carry: PyTree,
    inputs: PyTree,
    slice_frames: int,
) -> tuple[PyTree, PyTree]:
  """Applies `apply_slice` to consecutive temporal slices, carrying its state.

  Args:
    apply_slice: `(carry, inputs_slice, slice_start) -> (carry, outputs_slice)`; every
      leaf of `inputs_slice` and `outputs_slice` is `[B, slice_frames, ...]` (time on
      axis 1), `slice_start` is the int32 index of the slice's first frame (to re-base
      frame indices such as query frames).
    carry: the initial carried state (e.g. MooG's state and the readout states).
    inputs: per-frame inputs, every leaf `[B, T, ...]`.
    slice_frames: frames per slice; must divide T (0 = one slice).

  Returns:
    (final carry, outputs with every leaf `[B, T, ...]`, slices concatenated in time).
  """
  num_frames = jax.tree.leaves(inputs)[0].shape[1]
  num_slices = check_slice_frames(num_frames, slice_frames)
  slice_frames = num_frames // num_slices
  sliced = jax.tree.map(
      lambda x: einops.rearrange(x, 'b (s l) ... -> s b l ...', l=slice_frames), inputs
  )
  starts = jnp.arange(num_slices, dtype=jnp.int32) * slice_frames

  def body(carry, slice_and_start):
    inputs_slice, start = slice_and_start
    return apply_slice(carry, inputs_slice, start)

  carry, outputs = jax.lax.scan(body, carry, (sliced, starts))
  outputs = jax.tree.map(lambda x: einops.rearrange(x, 's b l ... -> b (s l) ...'), outputs)
  return carry, outputs
