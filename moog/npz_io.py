r"""Parameter names of the released Ego4D MooG `.npz` files <-> this project's MooG.

The released backbone (`moog_ego4d_backbone_ckpt_164335139.npz`, moog.md §12) stores
flat "a/b/c" keys whose top-level submodules are named after the colab's module:
`encoder`, `initializer`, `predictor_sa`, `predictor_ca`, `decoder`, `state_layer_norm`.
This project's `MooG` (see `moog/model.py`) names them `encoder`, `predictor`,
`corrector`, `decoder`, `state_norm`. The renaming of those top-level names is all that
the public spec documents:

  released            this project   role
  `encoder`           `encoder`      per-frame conv + PE encoder
  `predictor_sa`      `predictor`    self-attention transformer on the state
  `predictor_ca`      `corrector`    self- plus cross-attention transformer
  `decoder`           `decoder`      pixel decoder
  `state_layer_norm`  `state_norm`   scale-only LayerNorm of the state (eps 1e-4)
  `initializer`       (none)         initial state; non-learned noise here, so keys
                                     under it are refused as unexpected

Assumptions (the released files were not inspected; their inner key names are not in
the spec):
* Below the top-level name, keys are assumed to follow this project's names
  (`block_0/self_attention/query/kernel`, ...) and shapes. A file that differs fails
  to load with the missing, unexpected and mis-shaped names listed
  (`videolib.checkpoint.place_params`); extend `RELEASED_TO_PROJECT` (or add inner
  renames to `released_to_project_key`) from that list.
* The colab's decoder is written without a cross-attention-only flag (its blocks also
  self-attend, §12); this project's decoder is cross-attention only. If the released
  file holds decoder self-attention weights, they are reported as unexpected.

Convert a released file once, then initialise from the converted file::

  python -m moog.npz_io --released=moog_ego4d_backbone_ckpt_164335139.npz \
      --output=moog_ego4d_backbone_project_names.npz
"""

from collections.abc import Mapping
from typing import Any

from absl import app
from absl import flags

from videolib import checkpoint

RELEASED_TO_PROJECT: Mapping[str, str] = {
    'encoder': 'encoder',
    'predictor_sa': 'predictor',
    'predictor_ca': 'corrector',
    'decoder': 'decoder',
    'state_layer_norm': 'state_norm',
}
PROJECT_TO_RELEASED: Mapping[str, str] = {
    project: released for released, project in RELEASED_TO_PROJECT.items()
}


def _rename_top_level(key: str, names: Mapping[str, str]) -> str:
  top, separator, rest = key.partition(checkpoint.NPZ_KEY_SEPARATOR)
  return names.get(top, top) + separator + rest


def released_to_project_key(key: str) -> str:
  """'predictor_ca/block_0/...' -> 'corrector/block_0/...'; unknown top names unchanged.

  Unchanged unknown names (e.g. `initializer/...`) then surface as unexpected keys.
  """
  return _rename_top_level(key, RELEASED_TO_PROJECT)


def project_to_released_key(key: str) -> str:
  """'corrector/block_0/...' -> 'predictor_ca/block_0/...' (inverse of the above)."""
  return _rename_top_level(key, PROJECT_TO_RELEASED)


def save_released_layout(path: str, params: Any) -> None:
  """Writes this project's MooG `params` as `.npz` in the released key layout."""
  checkpoint.save_npz_params(
      path, {PROJECT_TO_RELEASED[name]: subtree for name, subtree in params.items()})


def load_released(path: str, abstract_params: Any) -> Any:
  """Loads a released-layout `.npz` into this project's MooG parameters (strict).

  Args:
    path: the released `.npz` file.
    abstract_params: this project's MooG parameter tree (concrete arrays or
      `jax.ShapeDtypeStruct`s with shardings), e.g. built from
      `model.ego4d_model_config()`.

  Returns:
    The parameters as global `jax.Array`s; missing, unexpected or mis-shaped names
    raise `checkpoint.CheckpointError`.
  """
  return checkpoint.load_npz_params(path, abstract_params, key_map=released_to_project_key)


def convert_released_file(released_path: str, output_path: str) -> None:
  """Rewrites a released `.npz` with this project's names, for `config.init_from`.

  Only names change; arrays are copied as stored. Names and shapes are checked when the
  converted file is loaded into a model.
  """
  checkpoint.save_npz_params(
      output_path, checkpoint.read_npz_params(released_path, released_to_project_key))


_RELEASED = flags.DEFINE_string('released', None, 'Released-layout .npz to convert.')
_OUTPUT = flags.DEFINE_string('output', None, '.npz to write with this project\'s names.')


def main(argv):
  del argv
  convert_released_file(_RELEASED.value, _OUTPUT.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['released', 'output'])
  app.run(main)
