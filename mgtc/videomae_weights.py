r"""Released VideoMAE checkpoints -> the parameters of `mgtc.vit` (classifier or pretrainer).

Two layouts are read, each as a self-supervised pretrained model (encoder + MAE decoder)
or a fine-tuned classifier (mean pooling, fc-norm, linear head):

* 'hf': Hugging Face `transformers` (`VideoMAEForPreTraining`,
  `VideoMAEForVideoClassification`, e.g. MCG-NJU/videomae-base[-finetuned-kinetics]):
  `videomae.embeddings.patch_embeddings.projection`, `videomae.encoder.layer.N.
  attention.attention.{query,key,value,q_bias,v_bias}`, `...attention.output.dense`,
  `...layernorm_{before,after}`, `...intermediate.dense`, `...output.dense`;
  pretraining adds `videomae.layernorm`, `encoder_to_decoder`, `mask_token`,
  `decoder.decoder_layers.N.*`, `decoder.norm`, `decoder.head`; classification
  `fc_norm`, `classifier`. A directory holds `config.json` (sizes, LayerNorm epsilon)
  and `model.safetensors` or `pytorch_model.bin`.
* 'original': the VideoMAE repository's `.pth` (`{'model': state_dict}` or the bare
  dict): `patch_embed.proj`, `blocks.N.{norm1,attn.qkv,attn.q_bias,attn.v_bias,
  attn.proj,norm2,mlp.fc1,mlp.fc2}`, `fc_norm`, `head`; pretraining prefixes the
  encoder with `encoder.` (plus `encoder.norm`) and adds `encoder_to_decoder`,
  `mask_token`, `decoder.blocks.N.*`, `decoder.norm`, `decoder.head`.

Conversions (PyTorch -> Flax): Linear weights [out, in] are transposed; HF's separate
query / key / value weights are concatenated into the fused `qkv` kernel (the key has
no bias in either layout); the Conv3d tubelet kernel [d, c, s, P, P] becomes the Dense
kernel `rearrange(k, 'd c t h w -> (t h w c) d')` (`vit.TubeletEmbedding`). Position
tables are fixed sinusoids in both (not stored). Loading is strict: every stored tensor
must be used and every model parameter found with its shape, else `CheckpointError`
names the keys.

Inputs: the released models expect frames in [0, 1] standardised with the ImageNet mean
and std; `model_config_updates` sets `input_standardisation='imagenet'`, which makes
`mgtc.vit` do that (the MAE targets stay on the [0, 1] clip, as VideoMAE's).

Files: `.safetensors` (read with `safetensors.numpy`), and PyTorch's zip pickles
(`.pth`, `.bin`, `.pt`), read without PyTorch by an unpickler that rebuilds tensors
only and never imports or runs code from the file.

Convert a checkpoint to this project's flat `.npz` (`config.init_from=FILE.npz`):
  python -m mgtc.videomae_weights --checkpoint=MCG-NJU-videomae-base/ \
      --output=videomae_base_pretrain.npz
"""

import collections
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import einops
import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np

from mgtc import vit
from videolib import checkpoint

WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')

# ----------------------------------------------------------------------------------------
# Reading files.
# ----------------------------------------------------------------------------------------

_TORCH_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class _Opaque:
  """Stands in for any non-tensor object of a pickle (optimizer state, argparse args)."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused
  if not size:
    return storage[offset].copy()
  itemsize = storage.dtype.itemsize
  return np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)).copy()


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _TensorUnpickler(pickle.Unpickler):
  """Unpickles a PyTorch zip checkpoint's `data.pkl` into numpy arrays, running no code."""

  def __init__(self, file, archive: zipfile.ZipFile, root: str):
    super().__init__(file)
    self._archive, self._root = archive, root

  def find_class(self, module, name):
    if module == 'collections' and name == 'OrderedDict':
      return collections.OrderedDict
    if module == 'torch._utils' and name in ('_rebuild_tensor_v2', '_rebuild_tensor'):
      return _rebuild_tensor
    if module == 'torch._utils' and name == '_rebuild_parameter':
      return _rebuild_parameter
    if module == 'torch' and name in _TORCH_DTYPES:
      return name
    return _Opaque

  def persistent_load(self, pid):
    kind, storage_type, key, _, _ = pid
    if kind != 'storage' or storage_type not in _TORCH_DTYPES:
      raise pickle.UnpicklingError(f'Unsupported tensor storage {storage_type!r}.')
    raw = self._archive.read(f'{self._root}/data/{key}')
    return np.frombuffer(raw, dtype=_TORCH_DTYPES[storage_type])


def read_torch_zip(path: str) -> dict[str, Any]:
  """The object saved by `torch.save` (zip format, PyTorch >= 1.6), tensors as numpy."""
  if not zipfile.is_zipfile(path):
    raise checkpoint.CheckpointError(
        f'{path}: not a PyTorch zip checkpoint (files from PyTorch < 1.6 are not read; '
        're-save it with a newer torch.save, or convert it to .safetensors).')
  with zipfile.ZipFile(path) as archive:
    pickles = [name for name in archive.namelist() if name.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise checkpoint.CheckpointError(f'{path}: expected one data.pkl, found {pickles}.')
    root = pickles[0][:-len('/data.pkl')]
    with archive.open(pickles[0]) as file:
      return _TensorUnpickler(file, archive, root).load()


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads a checkpoint file or Hugging Face directory.

  Args:
    path: a `.safetensors`, `.bin`, `.pth` or `.pt` file, or a directory holding
      `config.json` and one of `WEIGHT_FILES`.

  Returns:
    (flat name -> float array, the directory's `config.json` or {}).
  """
  hf_config = {}
  if os.path.isdir(path):
    config_path = os.path.join(path, 'config.json')
    if os.path.isfile(config_path):
      with open(config_path) as f:
        hf_config = json.load(f)
    files = [os.path.join(path, name) for name in WEIGHT_FILES
             if os.path.isfile(os.path.join(path, name))]
    if not files:
      raise FileNotFoundError(f'{path}: no {" or ".join(WEIGHT_FILES)} in this directory.')
    path = files[0]
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such checkpoint file.')
  if path.endswith('.safetensors'):
    from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
    tensors = safetensors_numpy.load_file(path)
  else:
    tensors = read_torch_zip(path)
    for wrapper in ('model', 'module', 'state_dict'):
      if isinstance(tensors, Mapping) and wrapper in tensors and isinstance(
          tensors[wrapper], Mapping):
        tensors = tensors[wrapper]
        break
  if not isinstance(tensors, Mapping):
    raise checkpoint.CheckpointError(f'{path}: holds no state dict.')
  arrays = {k: np.asarray(v, np.float32) for k, v in tensors.items()
            if isinstance(v, np.ndarray)}
  return arrays, hf_config


# ----------------------------------------------------------------------------------------
# Layouts.
# ----------------------------------------------------------------------------------------


def detect_layout(tensors: Mapping[str, np.ndarray]) -> tuple[str, str]:
  """(layout 'hf' | 'original', model 'pretrainer' | 'classifier') of a state dict."""
  names = set(tensors)
  if any(name.startswith('videomae.') for name in names):
    layout = 'hf'
  elif 'patch_embed.proj.weight' in names or 'encoder.patch_embed.proj.weight' in names:
    layout = 'original'
  else:
    raise checkpoint.CheckpointError(
        'Not a VideoMAE checkpoint: no videomae.* (Hugging Face) or patch_embed.proj '
        f'(original) tensors; some keys: {sorted(names)[:8]}.')
  model = 'pretrainer' if 'mask_token' in names else 'classifier'
  return layout, model


def _linear(prefix: str) -> dict[str, str]:
  return {'kernel': f'{prefix}.weight', 'bias': f'{prefix}.bias'}


def _norm(prefix: str) -> dict[str, str]:
  return {'scale': f'{prefix}.weight', 'bias': f'{prefix}.bias'}


def _first_present(names: set[str], *candidates: str) -> str:
  return next((name for name in candidates if name in names), candidates[0])


def _block_sources(layout: str, prefix: str, names: set[str]) -> dict[str, Any]:
  """Project block leaves -> source key (or a tuple of keys to fuse), per layout.

  transformers < 5 stores the query / value biases as `q_bias` / `v_bias` (as the
  original repository), transformers >= 5 as `query.bias` / `value.bias`.
  """
  if layout == 'original':
    return {
        'norm1': _norm(f'{prefix}.norm1'), 'norm2': _norm(f'{prefix}.norm2'),
        'attn': {'qkv': {'kernel': f'{prefix}.attn.qkv.weight'},
                 'q_bias': f'{prefix}.attn.q_bias', 'v_bias': f'{prefix}.attn.v_bias',
                 'proj': _linear(f'{prefix}.attn.proj')},
        'mlp': {'fc1': _linear(f'{prefix}.mlp.fc1'), 'fc2': _linear(f'{prefix}.mlp.fc2')},
    }
  attention = f'{prefix}.attention.attention'
  return {
      'norm1': _norm(f'{prefix}.layernorm_before'),
      'norm2': _norm(f'{prefix}.layernorm_after'),
      'attn': {'qkv': {'kernel': tuple(f'{attention}.{n}.weight'
                                       for n in ('query', 'key', 'value'))},
               'q_bias': _first_present(names, f'{attention}.q_bias', f'{attention}.query.bias'),
               'v_bias': _first_present(names, f'{attention}.v_bias', f'{attention}.value.bias'),
               'proj': _linear(f'{prefix}.attention.output.dense')},
      'mlp': {'fc1': _linear(f'{prefix}.intermediate.dense'),
              'fc2': _linear(f'{prefix}.output.dense')},
  }


def _count_blocks(names, pattern: str) -> int:
  indices = {int(m.group(1)) for n in names if (m := re.match(pattern, n))}
  if indices != set(range(len(indices))):
    raise checkpoint.CheckpointError(f'Block indices {sorted(indices)} are not 0..N-1.')
  return len(indices)


def source_layout(tensors: Mapping[str, np.ndarray], layout: str, model: str) -> dict:
  """The project's parameter tree with source key names at its leaves."""
  names = set(tensors)
  if layout == 'hf':
    encoder, patch = 'videomae.encoder.layer', 'videomae.embeddings.patch_embeddings.projection'
    decoder = 'decoder.decoder_layers'
    pretrain_norm, decoder_norm, decoder_head = 'videomae.layernorm', 'decoder.norm', 'decoder.head'
    classifier = {'fc_norm': _norm('fc_norm'), 'head': _linear('classifier')}
  else:
    stem = 'encoder.' if model == 'pretrainer' else ''
    encoder, patch = f'{stem}blocks', f'{stem}patch_embed.proj'
    decoder = 'decoder.blocks'
    pretrain_norm, decoder_norm, decoder_head = 'encoder.norm', 'decoder.norm', 'decoder.head'
    classifier = {'fc_norm': _norm('fc_norm'), 'head': _linear('head')}
  num_blocks = _count_blocks(names, re.escape(encoder) + r'\.(\d+)\.')
  tree = {
      'patch_embed': {'proj': _linear(patch)},
      'encoder': {f'block_{i}': _block_sources(layout, f'{encoder}.{i}', names)
                  for i in range(num_blocks)},
  }
  if model == 'classifier':
    if 'fc_norm.weight' not in names:
      raise checkpoint.CheckpointError(
          'This classifier has no fc_norm: it pools with a class token or a final norm, '
          'not the mean pooling + fc_norm of VideoMAE fine-tuning that mgtc.vit builds.')
    tree.update(classifier)
    return tree
  num_decoder_blocks = _count_blocks(names, re.escape(decoder) + r'\.(\d+)\.')
  tree.update({
      'encoder_norm': _norm(pretrain_norm),
      'encoder_to_decoder': {'kernel': 'encoder_to_decoder.weight'},
      'mask_token': 'mask_token',
      'decoder': {f'block_{i}': _block_sources(layout, f'{decoder}.{i}', names)
                  for i in range(num_decoder_blocks)},
      'decoder_norm': _norm(decoder_norm),
      'decoder_head': _linear(decoder_head),
  })
  return tree


def _flatten_sources(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for name, node in tree.items():
    if isinstance(node, dict):
      flat.update(_flatten_sources(node, f'{prefix}{name}/'))
    else:
      flat[f'{prefix}{name}'] = node
  return flat


def _convert_leaf(path: tuple[str, ...], source: str | tuple[str, ...],
                  tensors: Mapping[str, np.ndarray]) -> np.ndarray:
  if isinstance(source, tuple):  # HF query, key, value -> fused qkv kernel.
    return np.concatenate([tensors[name].T for name in source], axis=1)
  value = tensors[source]
  if path[-1] != 'kernel':
    return value
  if value.ndim == 5:  # Conv3d tubelet kernel.
    return einops.rearrange(value, 'd c t h w -> (t h w c) d')
  return value.T


def convert(tensors: Mapping[str, np.ndarray]) -> tuple[str, dict[str, Any]]:
  """A VideoMAE state dict -> ('pretrainer' | 'classifier', project parameter tree).

  Raises `CheckpointError` naming the source tensors that are missing or left unused.
  """
  layout, model = detect_layout(tensors)
  flat_sources = _flatten_sources(source_layout(tensors, layout, model))
  needed = set()
  for source in flat_sources.values():
    needed.update(source if isinstance(source, tuple) else (source,))
  missing = sorted(needed - set(tensors))
  unused = sorted(set(tensors) - needed)
  if missing or unused:
    raise checkpoint.CheckpointError(
        f'VideoMAE {layout} {model} checkpoint does not fit mgtc.vit:'
        + (f'\n  missing: {missing}' if missing else '')
        + (f'\n  unexpected: {unused}' if unused else ''))
  flat = {name: _convert_leaf(tuple(name.split('/')), source, tensors)
          for name, source in flat_sources.items()}
  return model, checkpoint.unflatten_params(flat)


def model_config_updates(tensors: Mapping[str, np.ndarray], params: dict[str, Any],
                         hf_config: Mapping[str, Any],
                         num_heads: int | None = None) -> dict[str, Any]:
  """`vit_*_config()` fields the checkpoint fixes.

  Widths, depths, tubelet and patch size come from the weights; the LayerNorm epsilon,
  frame size and clip length from config.json when there is one. Heads are not in the
  weights: `num_heads` (or config.json's `num_attention_heads`), else width / 64,
  VideoMAE's head size.
  """
  conv = next(value for name, value in tensors.items()
              if name.endswith(('patch_embed.proj.weight', 'patch_embeddings.projection.weight')))
  width, channels, tubelet_size, patch_size = conv.shape[:4]
  updates = {
      'input_standardisation': 'imagenet',
      'channels': channels,
      'tubelet_size': tubelet_size,
      'patch_size': patch_size,
      'width': width,
      'depth': len(params['encoder']),
      'num_heads': num_heads or hf_config.get('num_attention_heads') or width // 64,
      'mlp_ratio': params['encoder']['block_0']['mlp']['fc1']['kernel'].shape[1] / width,
  }
  if 'layer_norm_eps' in hf_config:
    updates['layer_norm_eps'] = hf_config['layer_norm_eps']
  for field in ('image_size', 'num_frames'):
    if field in hf_config:
      updates[field] = hf_config[field]
  if 'head' in params:
    updates['num_classes'] = params['head']['kernel'].shape[1]
  if 'decoder' in params:
    decoder_width = params['decoder_norm']['scale'].shape[0]
    updates.update(decoder_width=decoder_width, decoder_depth=len(params['decoder']),
                   decoder_num_heads=hf_config.get('decoder_num_attention_heads')
                   or decoder_width // 64)
  return updates


def load(path: str, num_heads: int | None = None) -> tuple[str, dict[str, Any], dict]:
  """Reads and converts a checkpoint: (model kind, parameters, model config updates)."""
  tensors, hf_config = read_state_dict(path)
  model, params = convert(tensors)
  return model, params, model_config_updates(tensors, params, hf_config, num_heads)


def load_into(path: str, model_config: ml_collections.ConfigDict) -> tuple[str, Any]:
  """Loads a checkpoint into the model `model_config` builds, checking every shape.

  The parameters land on the first device (for inspection and inference in a notebook);
  training loads the converted `.npz` through `config.init_from`, sharded by the trainer.

  Returns:
    (model kind, parameters placed like the model's); `CheckpointError` names missing,
    unexpected and mis-shaped parameters.
  """
  model_kind, params, _ = load(path, model_config.num_heads)
  frames = jnp.zeros((1, model_config.num_frames, model_config.image_size,
                      model_config.image_size, model_config.channels))
  if model_kind == 'classifier':
    module = vit.build_classifier(model_config)
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), frames, train=False))
  else:
    module = vit.build_pretrainer(model_config)
    indices = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(
        lambda: module.init(jax.random.key(0), frames, indices, indices, train=False))
  on_one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_one_device),
      abstract['params'])
  return model_kind, checkpoint.place_params(params, abstract, source=path)


def main(argv: list[str] | None = None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--checkpoint', required=True,
                      help='a .safetensors / .bin / .pth file or a Hugging Face directory')
  parser.add_argument('--output', required=True, help='the .npz to write')
  parser.add_argument('--num_heads', type=int, default=None,
                      help='attention heads (default: config.json, else width / 64)')
  args = parser.parse_args(argv)
  model, params, updates = load(args.checkpoint, args.num_heads)
  checkpoint.save_npz_params(args.output, params)
  print(f'Wrote the {model} ({sum(v.size for v in checkpoint.flatten_params(params).values()):,} '
        f'parameters) to {args.output}. Model config: {json.dumps(updates)}')


if __name__ == '__main__':
  main()
