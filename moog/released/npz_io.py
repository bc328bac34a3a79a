r"""Parameter names of the released Ego4D MooG `.npz` files <-> this project's modules.

Backbone (`moog_ego4d_backbone_ckpt_164335139.npz`, docs/moog_reference.md §12)
-----------------------------------------------------------------
The file stores flat "a/b/c" keys. Its names are not documented; they are derived (the
file itself was not inspected: no network here) from the module code that loads it,
google-deepmind/representations4d `colabs/moog_inference_demo.ipynb` (its `MooG`,
`EvalWrapper`, `SRTEncoder`, `SRTDecoder`, `ConvNet`, `ImprovedTransformer(Block)`,
`ImprovedMHDPAttention`), cross-checked with the same repository's `moog/attention.py`,
`moog/conv.py`, `moog/modules.py` and `moog/configs/movi.py`, under Flax's naming rules:
an explicit `name=` wins; otherwise a submodule made in an `@nn.compact` method is
`<ClassName>_<i>`, counted per class in creation order within its parent; a module held
in a dataclass field (or assigned in `setup`) is named by that attribute.

Whole path components are renamed per position (`#` = a layer index, 0, 1, ...);
parameter leaves (`kernel`, `bias`, `scale`) and all shapes are unchanged:

  released (colab)                      this project
  `encoder/backbone/Conv_#`             `encoder/backbone/conv_#`
  `encoder/backbone/LayerNorm_0`        `encoder/backbone/output_norm`
  `encoder/pos_embedding/dense_pe`      `encoder/pos_embedding/projection` (project_add
                                        only; the released concat PE has no parameters)
  `encoder/transformer/Dense_0`         `encoder/token_projection/input_projection`
  `encoder/transformer/norm_encoder`    `encoder/token_projection/final_norm`
  `encoder/transformer/Dense_1`         `encoder/token_projection/output_projection`
  `predictor_sa/<T>`                    `predictor/<T>`
  `predictor_ca/<T>`                    `corrector/<T>`
  `decoder/transformer/<T>`             `decoder/transformer/<T>`
  `decoder/recon`                       `decoder/output_head`
  `state_layer_norm`                    `state_norm`
  `initializer`                         (none: non-learned noise on both sides)

  transformer <T>                       this project
  `layer_#`                             `block_#`
  `norm_encoder`                        `final_norm`
  `layer_#/norm_q`                      `block_#/attention_norm`
  `layer_#/self_att/<A>`                `block_#/self_attention/<A>`
  `layer_#/cross_att/<A>`               `block_#/cross_attention/<A>`
  `layer_#/norm_attn`                   `block_#/mlp_norm`
  `layer_#/MLP_in`, `MLP_out`           `block_#/mlp_in`, `mlp_out`

  attention <A>                         this project
  `dense_query`, `dense_key`, `dense_value`  `query`, `key`, `value`
  `norm_query`, `norm_key`              `query_norm`, `key_norm`
  `dense_out`                           `output`

Anything else (e.g. `Dense_0` inside the predictor, which the released transformers
do not have, or a key already in this project's names) is outside the layout: loading
and converting refuse it by name, nothing is dropped silently. The map is one-to-one
on the layout (tests/test_npz_io.py checks it at release sizes, shapes only).

Wrapper prefix: the colab applies the file to `EvalWrapper(pretrained_model=MooG(...))`,
whose `setup` re-binds the children of its `pretrained_model` field. Flax keeps those
children under the field's scope, so the colab's parameter tree is
`pretrained_model/encoder/...` (checked by running the same module structure with this
repo's Flax 0.12), and the file holds that prefix if the colab runs as published. The
colab has unexecuted parts (its decoder reads undefined names), so a bare `MooG` tree is
accepted as well. Loading and converting take `prefix='auto'`: every key under
`pretrained_model/` -> that prefix is stripped; no key under it -> none; a mix is
refused. `prefix=''` or `prefix='pretrained_model'` (or any other) forces one.
Export (`save_released_layout`) writes no prefix unless given one; pass
`prefix=RELEASED_WRAPPER_PREFIX` for a file the colab's `EvalWrapper` accepts.

Decoder: the colab's `EvalWrapper` never runs the decoder, so the colab constrains
only the encoder, predictors and state norm. The upstream training code builds the
decoder cross-attention only (`cross_attn_only=True` in `moog/configs/movi.py`), and
the upstream README's "35M, 140MB" matches that (35,193,811 parameters), not decoder
blocks that also self-attend (36,967,507, as the colab's decoder class is written). So
`model.decoder_self_attention` is False in `model.ego4d_model_config()`; if a file holds
`decoder/transformer/layer_#/self_att` weights, loading fails naming them and says to
set `--config.model.decoder_self_attention=True`, with which they load one-to-one.

Readout heads (`moog_ego4d_{point,box}_track_head_ckpt_164335139.npz`) load into
`moog.readouts.attention_heads.AttentionPointReadout` / `AttentionBoxReadout`. Their released
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
bundles the backbone, docs/moog_reference.md §11), loading fails with them listed as unexpected.

Convert a released file once, then initialise from the converted file::

  python -m moog.released.npz_io --released=moog_ego4d_backbone_ckpt_164335139.npz \
      --output=moog_ego4d_backbone_project_names.npz
  python -m moog.released.npz_io --kind=head \
      --released=moog_ego4d_point_track_head_ckpt_164335139.npz \
      --output=moog_ego4d_point_track_head_project_names.npz
"""

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from absl import app
from absl import flags
import jax
import numpy as np

from videolib import checkpoint

SEP = checkpoint.NPZ_KEY_SEPARATOR
RELEASED_WRAPPER_PREFIX = 'pretrained_model'
PARAM_LEAVES = frozenset({'kernel', 'bias', 'scale'})

# {released component: (project component, children)}; children None = a Flax layer whose
# only remaining component is its parameter leaf. '#' stands for a layer index.
_Schema = Mapping[str, tuple[str, Any]]
_ATTENTION: _Schema = {
    'dense_query': ('query', None),
    'dense_key': ('key', None),
    'dense_value': ('value', None),
    'norm_query': ('query_norm', None),
    'norm_key': ('key_norm', None),
    'dense_out': ('output', None),
}
_BLOCK: _Schema = {
    'norm_q': ('attention_norm', None),
    'self_att': ('self_attention', _ATTENTION),
    'cross_att': ('cross_attention', _ATTENTION),
    'norm_attn': ('mlp_norm', None),
    'MLP_in': ('mlp_in', None),
    'MLP_out': ('mlp_out', None),
}
_TRANSFORMER: _Schema = {
    'layer_#': ('block_#', _BLOCK),
    'norm_encoder': ('final_norm', None),
}
_ENCODER: _Schema = {
    'backbone': ('backbone', {'Conv_#': ('conv_#', None), 'LayerNorm_0': ('output_norm', None)}),
    'pos_embedding': ('pos_embedding', {'dense_pe': ('projection', None)}),
    'transformer': ('token_projection', {
        'Dense_0': ('input_projection', None),
        'norm_encoder': ('final_norm', None),
        'Dense_1': ('output_projection', None),
    }),
}
BACKBONE_RELEASED_TO_PROJECT: _Schema = {
    'encoder': ('encoder', _ENCODER),
    'predictor_sa': ('predictor', _TRANSFORMER),
    'predictor_ca': ('corrector', _TRANSFORMER),
    'decoder': ('decoder', {
        'transformer': ('transformer', _TRANSFORMER),
        'recon': ('output_head', None),
    }),
    'state_layer_norm': ('state_norm', None),
}


def _inverted(schema: _Schema) -> _Schema:
  return {target: (source, None if children is None else _inverted(children))
          for source, (target, children) in schema.items()}


BACKBONE_PROJECT_TO_RELEASED: _Schema = _inverted(BACKBONE_RELEASED_TO_PROJECT)
_INDEX = re.compile(r'(0|[1-9][0-9]*)')


def _rename_component(part: str, schema: _Schema) -> tuple[str, Any] | None:
  if part in schema:
    return schema[part]
  for pattern, (target, children) in schema.items():
    stem = pattern[:-1]
    if pattern.endswith('#') and part.startswith(stem) and _INDEX.fullmatch(part[len(stem):]):
      return target[:-1] + part[len(stem):], children
  return None


def _translate(key: str, schema: _Schema) -> str | None:
  parts, out = key.split(SEP), []
  while parts:
    renamed = _rename_component(parts.pop(0), schema)
    if renamed is None:
      return None
    target, schema = renamed
    out.append(target)
    if schema is None:  # A layer: exactly its parameter leaf remains.
      if len(parts) != 1 or parts[0] not in PARAM_LEAVES:
        return None
      return SEP.join(out + parts)
  return None


def released_to_project_key(key: str) -> str | None:
  """'predictor_ca/layer_0/cross_att/dense_query/kernel' -> 'corrector/block_0/
  cross_attention/query/kernel'; None for a key outside the released layout.

  `key` carries no wrapper prefix (see `strip_wrapper_prefix`).
  """
  return _translate(key, BACKBONE_RELEASED_TO_PROJECT)


def project_to_released_key(key: str) -> str | None:
  """The inverse of `released_to_project_key`; None for a name it cannot come from."""
  return _translate(key, BACKBONE_PROJECT_TO_RELEASED)


def strip_wrapper_prefix(keys: Iterable[str], prefix: str = 'auto',
                         source: str = 'the file') -> dict[str, str]:
  """{stored key: key without the wrapper prefix}.

  Args:
    keys: the stored flat keys.
    prefix: 'auto' (strip `RELEASED_WRAPPER_PREFIX` when every key is under it, none
      when no key is; a mix is refused), '' (none), or a prefix every key must carry.
    source: named in errors.
  """
  keys = list(keys)
  if prefix == 'auto':
    under = [key for key in keys if key.startswith(RELEASED_WRAPPER_PREFIX + SEP)]
    if under and len(under) != len(keys):
      others = sorted(set(keys) - set(under))
      raise checkpoint.CheckpointError(
          f'{source}: {len(under)} keys lie under {RELEASED_WRAPPER_PREFIX!r} and '
          f'{len(others)} do not (e.g. {others[:5]}); pass the prefix explicitly.')
    prefix = RELEASED_WRAPPER_PREFIX if under else ''
  if not prefix:
    return {key: key for key in keys}
  outside = sorted(key for key in keys if not key.startswith(prefix + SEP))
  if outside:
    raise checkpoint.CheckpointError(
        f'{source}: keys outside the wrapper prefix {prefix!r}: {outside[:20]}'
        f'{" ..." if len(outside) > 20 else ""}')
  return {key: key[len(prefix) + len(SEP):] for key in keys}


def _released_flat_to_project(path: str, prefix: str) -> dict[str, np.ndarray]:
  """Reads a released backbone file into {project key: array}; refuses unmapped keys."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path!r}: no such .npz file.')
  with np.load(path, allow_pickle=False) as stored:
    unprefixed = strip_wrapper_prefix(stored.files, prefix, source=path)
    flat, outside = {}, []
    for stored_key, key in unprefixed.items():
      project_key = released_to_project_key(key)
      if project_key is None:
        outside.append(stored_key)
      else:
        flat[project_key] = stored[stored_key]
  if outside:
    raise checkpoint.CheckpointError(
        f'{path}: keys outside the released MooG backbone layout (see moog/released/npz_io.py), '
        f'nothing was loaded: {sorted(outside)}')
  return flat


def _decoder_self_attention(keys: Iterable[str]) -> bool:
  return any(re.match(r'decoder/transformer/block_\d+/self_attention/', key) for key in keys)


def load_released(path: str, abstract_params: Any, prefix: str = 'auto') -> Any:
  """Loads a released-layout backbone `.npz` into this project's MooG parameters (strict).

  Args:
    path: the released `.npz` file.
    abstract_params: this project's MooG parameter tree (concrete arrays or
      `jax.ShapeDtypeStruct`s with shardings), e.g. built from
      `model.ego4d_model_config()`.
    prefix: the wrapper prefix of the stored keys; see `strip_wrapper_prefix`.

  Returns:
    The parameters as global `jax.Array`s. Keys outside the released layout, and
    missing, unexpected or mis-shaped parameters raise `checkpoint.CheckpointError`
    naming them (with a hint when only the decoder's self-attention differs).
  """
  flat = _released_flat_to_project(path, prefix)
  try:
    return checkpoint.place_params(checkpoint.unflatten_params(flat), abstract_params,
                                   source=path)
  except checkpoint.CheckpointError as error:
    model_keys = checkpoint.flatten_params(
        jax.tree.map(lambda leaf: np.zeros((), np.int8), abstract_params))
    in_file, in_model = _decoder_self_attention(flat), _decoder_self_attention(model_keys)
    if in_file != in_model:
      raise checkpoint.CheckpointError(
          f'{error}\nThe file {"holds" if in_file else "lacks"} decoder self-attention '
          f'weights and the model {"does not" if in_file else "does"}: build it with '
          f'model.decoder_self_attention={in_file}.') from error
    raise


def save_released_layout(path: str, params: Any, prefix: str = '') -> None:
  """Writes this project's MooG `params` as `.npz` in the released key layout.

  Args:
    path: the `.npz` to write.
    params: MooG parameters (nested dict of arrays).
    prefix: wrapper prefix for every key; `RELEASED_WRAPPER_PREFIX` gives the colab's
      `EvalWrapper` tree, '' (default) the bare `MooG` tree.
  """
  flat = checkpoint.flatten_params(params)
  released = {key: project_to_released_key(key) for key in flat}
  outside = sorted(key for key, name in released.items() if name is None)
  if outside:
    raise checkpoint.CheckpointError(
        f'Parameters with no place in the released MooG layout: {outside}')
  head = prefix + SEP if prefix else ''
  checkpoint.save_npz_params(
      path, checkpoint.unflatten_params(
          {head + released[key]: value for key, value in flat.items()}))


def _rename_prefix(key: str, names: Mapping[str, str]) -> str:
  """Renames the longest prefix of whole '/'-separated components found in `names`."""
  parts = key.split(SEP)
  for length in range(len(parts), 0, -1):
    prefix = SEP.join(parts[:length])
    if prefix in names:
      return SEP.join([names[prefix], *parts[length:]])
  return key


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
    abstract_params: the parameter tree of `attention_heads.AttentionPointReadout`
      or `AttentionBoxReadout` (concrete arrays or `jax.ShapeDtypeStruct`s with
      shardings), e.g. from `attention_heads.released_point_head_config()`.

  Returns:
    The parameters as global `jax.Array`s; missing, unexpected or mis-shaped names
    raise `checkpoint.CheckpointError`.
  """
  return checkpoint.load_npz_params(
      path, abstract_params, key_map=released_head_to_project_key)


KINDS = ('backbone', 'head')


def convert_released_file(released_path: str, output_path: str, kind: str = 'backbone',
                          prefix: str = 'auto') -> None:
  """Rewrites a released `.npz` with this project's names, for `config.init_from`.

  Only names change; arrays are copied as stored. Backbone keys outside the released
  layout are refused by name (nothing is dropped); shapes are checked when the
  converted file is loaded into a model.

  Args:
    released_path: the released `.npz`.
    output_path: where to write the renamed `.npz`.
    kind: 'backbone' (MooG) or 'head' (point- or box-track attention readout).
    prefix: the backbone file's wrapper prefix (see `strip_wrapper_prefix`).
  """
  if kind not in KINDS:
    raise ValueError(f'kind must be one of {sorted(KINDS)}, got {kind!r}.')
  if kind == 'backbone':
    params = checkpoint.unflatten_params(_released_flat_to_project(released_path, prefix))
  else:
    params = checkpoint.read_npz_params(released_path, released_head_to_project_key)
  checkpoint.save_npz_params(output_path, params)


_RELEASED = flags.DEFINE_string('released', None, 'Released-layout .npz to convert.')
_OUTPUT = flags.DEFINE_string('output', None, '.npz to write with this project\'s names.')
_KIND = flags.DEFINE_enum('kind', 'backbone', sorted(KINDS),
                          'backbone: MooG; head: a point- or box-track readout head.')
_PREFIX = flags.DEFINE_string(
    'prefix', 'auto', "Backbone only: wrapper prefix of the stored keys; 'auto' strips "
    f"'{RELEASED_WRAPPER_PREFIX}/' when every key has it, '' = none.")


def main(argv):
  del argv
  convert_released_file(_RELEASED.value, _OUTPUT.value, _KIND.value, _PREFIX.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['released', 'output'])
  app.run(main)
