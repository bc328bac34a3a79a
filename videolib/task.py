"""The trainer's contract: what a model contributes to `videolib.train`.

A task subclasses `Task` and overrides the five required methods; the optional hooks'
defaults give the plain behaviour (every parameter trained, no layer decay, summaries
written as computed, ...). The trainer calls only what is declared here.

The tasks: `moog.task.MooGTask` (next-frame pretraining of MooG, Grid or Grid Rec.),
`moog.readouts.task.ReadoutTask` (frozen-backbone readouts), `mgtc.task.PretrainTask`
(VideoMAE masked autoencoding) and `mgtc.task.ClassificationTask` (MGTC fine-tuning).
"""

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from videolib import optim

PyTree = Any
Batch = dict[str, jax.Array]


class Task:
  """Base class of the tasks; see the module docstring.

  Attributes:
    checkpoint_config_sections: dotted config paths, besides 'model', that a checkpoint
      must match to be resumed or evaluated (e.g. the readout heads' settings).
    frozen_params: None (everything trains, and the optimizer state keeps the plain
      layout), or in a task that freezes parameters a method `frozen_params(params) ->
      pytree of bools like params`: True leaves are never updated (no update, no weight
      decay, no optimizer state).
  """

  checkpoint_config_sections: tuple[str, ...] = ()
  frozen_params: Callable[[PyTree], PyTree] | None = None

  # ---- Required ---------------------------------------------------------------------------

  def validate_config(self, config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the offending field; called before any work."""
    raise NotImplementedError

  def init(self, rng: jax.Array, batch: dict[str, jax.ShapeDtypeStruct]) -> PyTree:
    """The parameters, from a batch's shapes (traced under `jax.eval_shape` first)."""
    raise NotImplementedError

  def loss_fn(self, params: PyTree, batch: Batch, rng: jax.Array
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(scalar loss, {name: scalar metric})` of one training batch."""
    raise NotImplementedError

  def eval_fn(self, params: PyTree, batch: Batch, rng: jax.Array
              ) -> dict[str, tuple[jax.Array, jax.Array]]:
    """`{name: (sum, count)}`, weighted by `batch['_mask']` (padding counts 0).

    The trainer sums both over the eval split and reports sum / count
    (`videolib.metrics.finalize`: NaN where the count is 0).
    """
    raise NotImplementedError

  def summaries(self, params: PyTree, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
    """`{name: uint8 [b, T, H, W, 3]}` videos for TensorBoard, computed on the devices."""
    raise NotImplementedError

  # ---- Optional hooks ---------------------------------------------------------------------

  def validate_batch(self, batch: dict[str, np.ndarray]) -> None:
    """Raises on a bad host-side batch before it reaches the devices. Default: accepts."""
    del batch

  def layer_ids(self) -> optim.LayerIds | None:
    """The parameter -> layer map that `config.optimizer.layer_decay` needs. Default: none."""
    return None

  def init_from_prefixes(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Top-level parameter subtrees that `config.init_from` loads; () loads all (default)."""
    del config
    return ()

  def render_summaries(self, summaries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host-side drawing on the output of `summaries` (e.g. token tracks). Default: as is."""
    return summaries

  def for_cost_analysis(self, config: ml_collections.ConfigDict) -> "Task":
    """The same computation with its loops unrolled, for FLOP counts (XLA's cost analysis
    counts a while-loop body once). Default: this task (it has no loops)."""
    del config
    return self
