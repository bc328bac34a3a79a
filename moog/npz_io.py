r"""Parameter names of the released Ego4D MooG `.npz` files <-> this project's modules.

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

Readout heads (`moog_ego4d_{point,box}_track_head_ckpt_164335139.npz`) load into
`moog.attention_readouts.AttentionPointReadout` / `AttentionBoxReadout`. Their released
names are derived, not read from the files (no network here): they are the names Flax
gives to the colab's `TrackingReadoutWrapper(attention_readout=AttentionReadout(...),
query_initializer=kd.nn.Sequential([SampleFourierEmbedding, MLP]))` (explicit names
where the colab sets one, else Flax's `<Class>_<i>` auto-names in creation order;
kauldron's `LearnedEmbedding` stores its array as `embeddings`; the parameter-free
Fourier layer is `layers_0`, so the MLP is `layers_1`). The full map is
`HEAD_RELEASED_TO_PROJECT` (whole path components, longest prefix first):

  released                                      this project
  `query_initializer/layers_1/Dense_{0,1}`      `query_init/dense_{in,out}`
  `temporal_tile_posenc/embeddings` [8, 512]    `tile_embedding` (points only)
  `attention_readout/LayerNorm_0`               `readout/feature_norm`
  `attention_readout/temporal_posenc/embeddings` [16, 1, 512]
                                                `readout/temporal_embedding`
  `attention_readout/Dense_0`                   `readout/query`
  `attention_readout/{key,value}_embedding`     `readout/{key,value}`
  `attention_readout/Dense_1`                   `readout/attention_out`
  `attention_readout/LayerNorm_1`               `readout/mlp_norm`
  `attention_readout/MLP_0/Dense_{0,1}`         `readout/mlp/dense_{in,out}`
  `attention_readout/Dense_2`                   `readout/head`

Shapes are unchanged by the map. If a released file holds other names (e.g. the file
bundles the backbone, moog.md §11), loading fails with them listed as unexpected.

Convert a released file once, then initialise from the converted file::

  python -m moog.npz_io --released=moog_ego4d_backbone_ckpt_164335139.npz \
      --output=moog_ego4d_backbone_project_names.npz
  python -m moog.npz_io --kind=head \
      --released=moog_ego4d_point_track_head_ckpt_164335139.npz \
      --output=moog_ego4d_point_track_head_project_names.npz
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


def _rename_prefix(key: str, names: Mapping[str, str]) -> str:
  """Renames the longest prefix of whole '/'-separated components found in `names`."""
  parts = key.split(checkpoint.NPZ_KEY_SEPARATOR)
  for length in range(len(parts), 0, -1):
    prefix = checkpoint.NPZ_KEY_SEPARATOR.join(parts[:length])
    if prefix in names:
      return checkpoint.NPZ_KEY_SEPARATOR.join([names[prefix], *parts[length:]])
  return key


def released_to_project_key(key: str) -> str:
  """'predictor_ca/block_0/...' -> 'corrector/block_0/...'; unknown top names unchanged.

  Unchanged unknown names (e.g. `initializer/...`) then surface as unexpected keys.
  """
  return _rename_prefix(key, RELEASED_TO_PROJECT)


def project_to_released_key(key: str) -> str:
  """'corrector/block_0/...' -> 'predictor_ca/block_0/...' (inverse of the above)."""
  return _rename_prefix(key, PROJECT_TO_RELEASED)


HEAD_RELEASED_TO_PROJECT: Mapping[str, str] = {
    'query_initializer/layers_1/Dense_0': 'query_init/dense_in',
    'query_initializer/layers_1/Dense_1': 'query_init/dense_out',
    'temporal_tile_posenc/embeddings': 'tile_embedding',
    'attention_readout/LayerNorm_0': 'readout/feature_norm',
    'attention_readout/temporal_posenc/embeddings': 'readout/temporal_embedding',
    'attention_readout/Dense_0': 'readout/query',
    'attention_readout/key_embedding': 'readout/key',
    'attention_readout/value_embedding': 'readout/value',
    'attention_readout/Dense_1': 'readout/attention_out',
    'attention_readout/LayerNorm_1': 'readout/mlp_norm',
    'attention_readout/MLP_0/Dense_0': 'readout/mlp/dense_in',
    'attention_readout/MLP_0/Dense_1': 'readout/mlp/dense_out',
    'attention_readout/Dense_2': 'readout/head',
}
HEAD_PROJECT_TO_RELEASED: Mapping[str, str] = {
    project: released for released, project in HEAD_RELEASED_TO_PROJECT.items()
}


def released_head_to_project_key(key: str) -> str:
  """'attention_readout/Dense_0/kernel' -> 'readout/query/kernel'; unknown keys unchanged.

  Unchanged unknown names then surface as unexpected keys when loading.
  """
  return _rename_prefix(key, HEAD_RELEASED_TO_PROJECT)


def project_head_to_released_key(key: str) -> str:
  """'readout/query/kernel' -> 'attention_readout/Dense_0/kernel' (inverse of the above)."""
  return _rename_prefix(key, HEAD_PROJECT_TO_RELEASED)


def save_released_head_layout(path: str, params: Any) -> None:
  """Writes attention-readout head `params` as `.npz` in the released key layout."""
  flat = {project_head_to_released_key(key): value
          for key, value in checkpoint.flatten_params(params).items()}
  checkpoint.save_npz_params(path, checkpoint.unflatten_params(flat))


def load_released_head(path: str, abstract_params: Any) -> Any:
  """Loads a released point- or box-track head `.npz` into this project's head (strict).

  Args:
    path: the released `.npz` file.
    abstract_params: the parameter tree of `attention_readouts.AttentionPointReadout`
      or `AttentionBoxReadout` (concrete arrays or `jax.ShapeDtypeStruct`s with
      shardings), e.g. from `attention_readouts.released_point_head_config()`.

  Returns:
    The parameters as global `jax.Array`s; missing, unexpected or mis-shaped names
    raise `checkpoint.CheckpointError`.
  """
  return checkpoint.load_npz_params(
      path, abstract_params, key_map=released_head_to_project_key)


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


KEY_MAPS = {'backbone': released_to_project_key, 'head': released_head_to_project_key}


def convert_released_file(released_path: str, output_path: str, kind: str = 'backbone') -> None:
  """Rewrites a released `.npz` with this project's names, for `config.init_from`.

  Only names change; arrays are copied as stored. Names and shapes are checked when the
  converted file is loaded into a model.

  Args:
    released_path: the released `.npz`.
    output_path: where to write the renamed `.npz`.
    kind: 'backbone' (MooG) or 'head' (point- or box-track attention readout).
  """
  if kind not in KEY_MAPS:
    raise ValueError(f'kind must be one of {sorted(KEY_MAPS)}, got {kind!r}.')
  checkpoint.save_npz_params(
      output_path, checkpoint.read_npz_params(released_path, KEY_MAPS[kind]))


_RELEASED = flags.DEFINE_string('released', None, 'Released-layout .npz to convert.')
_OUTPUT = flags.DEFINE_string('output', None, '.npz to write with this project\'s names.')
_KIND = flags.DEFINE_enum('kind', 'backbone', sorted(KEY_MAPS),
                          'backbone: MooG; head: a point- or box-track readout head.')


def main(argv):
  del argv
  convert_released_file(_RELEASED.value, _OUTPUT.value, _KIND.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['released', 'output'])
  app.run(main)
