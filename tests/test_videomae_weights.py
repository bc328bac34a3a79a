"""Released VideoMAE weights in mgtc.vit: parity with the PyTorch models, strict loading.

The fixture (tests/data/videomae/small, written by benchmarks/videomae_parity_fixture.py
with transformers' VideoMAE at random weights) holds the weights in the Hugging Face
safetensors layout and the VideoMAE repository's .pth layout, fixed clips and tube masks,
and the PyTorch models' outputs. `VIDEOMAE_FIXTURE=DIR` runs the same checks on another
fixture (e.g. ViT-B/16 shapes, written outside the repository).
"""

import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgtc import videomae_weights
from mgtc import vit
from videolib import checkpoint

FIXTURE = os.environ.get('VIDEOMAE_FIXTURE',
                         os.path.join(os.path.dirname(__file__), 'data', 'videomae', 'small'))
TOLERANCE = 1e-4  # Max |difference| against PyTorch, float32.
FILES = {('hf', 'classifier'): 'hf_classifier.safetensors',
         ('hf', 'pretrainer'): 'hf_pretrainer.safetensors',
         ('original', 'classifier'): 'original_classifier.pth',
         ('original', 'pretrainer'): 'original_pretrainer.pth'}


@pytest.fixture(scope='module')
def io():
  with np.load(os.path.join(FIXTURE, 'io.npz')) as stored:
    return dict(stored)


@pytest.fixture(scope='module')
def hf_config():
  with open(os.path.join(FIXTURE, 'config.json')) as f:
    return json.load(f)


def _model_config(updates):
  config = vit.vit_b_config()
  config.update(updates)
  config.drop_path_rate = 0.0
  return config


def _video(io):
  """PyTorch's ImageNet-standardised [B, T, C, H, W] pixel values -> the [B, T, H, W, C]
  clip in [0, 1] of the batch contract (the converted model standardises it itself)."""
  mean, std = vit.INPUT_STANDARDISATIONS['imagenet']
  return jnp.asarray(np.transpose(io['pixel_values'], (0, 1, 3, 4, 2)) * std + mean)


@pytest.mark.parametrize('layout', ['hf', 'original'])
def test_classifier_logits_match_pytorch(io, hf_config, layout):
  kind, params, updates = videomae_weights.load(os.path.join(FIXTURE, FILES[layout, 'classifier']))
  assert kind == 'classifier'
  assert updates['num_classes'] == len(hf_config['id2label'])
  assert updates['input_standardisation'] == 'imagenet'
  config = _model_config({**updates, 'num_heads': hf_config['num_attention_heads']})
  logits = vit.build_classifier(config).apply({'params': params}, _video(io), train=False)
  difference = np.max(np.abs(np.asarray(logits) - io['classifier_logits']))
  assert difference <= TOLERANCE, difference
  # The logits are not trivially small: a wrong weight would show.
  assert np.std(io['classifier_logits']) > 0.05


@pytest.mark.parametrize('layout', ['hf', 'original'])
def test_pretrainer_predictions_and_loss_match_pytorch(io, hf_config, layout):
  kind, params, updates = videomae_weights.load(os.path.join(FIXTURE, FILES[layout, 'pretrainer']))
  assert kind == 'pretrainer'
  config = _model_config({**updates, 'num_heads': hf_config['num_attention_heads'],
                          'decoder_num_heads': hf_config['decoder_num_attention_heads']})
  masked = io['bool_masked_pos']
  # Raster order within each group, as PyTorch's boolean indexing keeps it.
  visible_indices = jnp.asarray(np.stack([np.flatnonzero(~m) for m in masked]))
  masked_indices = jnp.asarray(np.stack([np.flatnonzero(m) for m in masked]))
  video = _video(io)
  predictions = vit.build_pretrainer(config).apply(
      {'params': params}, video, visible_indices, masked_indices, train=False)
  difference = np.max(np.abs(np.asarray(predictions) - io['pretrainer_logits']))
  assert difference <= TOLERANCE, difference

  # The norm-pix loss on the clip in [0, 1] (the PyTorch model un-standardises first).
  targets = vit.reconstruction_targets(video, config.patch_size, config.tubelet_size)
  loss = vit.masked_reconstruction_loss(jnp.asarray(io['pretrainer_logits']), targets,
                                        masked_indices)
  assert abs(float(loss) - float(io['pretrainer_loss'])) <= TOLERANCE, (loss, io['pretrainer_loss'])


def test_both_layouts_give_the_same_parameters():
  for model in ('classifier', 'pretrainer'):
    _, hf, _ = videomae_weights.load(os.path.join(FIXTURE, FILES['hf', model]))
    _, original, _ = videomae_weights.load(os.path.join(FIXTURE, FILES['original', model]))
    jax.tree.map(np.testing.assert_array_equal, hf, original)


def test_torch_zip_reader_matches_safetensors():
  original, _ = videomae_weights.read_state_dict(
      os.path.join(FIXTURE, FILES['original', 'classifier']))
  hf, _ = videomae_weights.read_state_dict(os.path.join(FIXTURE, FILES['hf', 'classifier']))
  np.testing.assert_array_equal(original['head.weight'], hf['classifier.weight'])
  np.testing.assert_array_equal(original['patch_embed.proj.weight'],
                                hf['videomae.embeddings.patch_embeddings.projection.weight'])


def test_hugging_face_directory_reads_config_json(tmp_path, hf_config):
  directory = tmp_path / 'videomae'
  directory.mkdir()
  (directory / 'model.safetensors').write_bytes(
      open(os.path.join(FIXTURE, FILES['hf', 'classifier']), 'rb').read())
  (directory / 'config.json').write_text(json.dumps(hf_config))
  _, _, updates = videomae_weights.load(str(directory))
  assert updates['num_heads'] == hf_config['num_attention_heads']
  assert updates['layer_norm_eps'] == hf_config['layer_norm_eps']
  assert updates['patch_size'] == hf_config['patch_size']


def test_missing_and_unexpected_tensors_are_named():
  tensors, _ = videomae_weights.read_state_dict(os.path.join(FIXTURE, FILES['hf', 'classifier']))
  broken = dict(tensors)
  del broken['videomae.encoder.layer.1.intermediate.dense.bias']
  broken['videomae.pooler.dense.weight'] = np.zeros((2, 2), np.float32)
  with pytest.raises(checkpoint.CheckpointError) as error:
    videomae_weights.convert(broken)
  assert 'missing: [\'videomae.encoder.layer.1.intermediate.dense.bias\']' in str(error.value)
  assert 'videomae.pooler.dense.weight' in str(error.value)
  with pytest.raises(checkpoint.CheckpointError, match='Not a VideoMAE checkpoint'):
    videomae_weights.convert({'conv1.weight': np.zeros(3, np.float32)})


def test_misshaped_parameters_are_named(hf_config):
  path = os.path.join(FIXTURE, FILES['hf', 'classifier'])
  _, _, updates = videomae_weights.load(path)
  config = _model_config({**updates, 'num_heads': hf_config['num_attention_heads']})
  kind, params = videomae_weights.load_into(path, config)
  assert kind == 'classifier' and params['head']['kernel'].shape[1] == config.num_classes
  config.num_classes += 1
  with pytest.raises(checkpoint.CheckpointError, match=r"head.*kernel.*\d+\) != "):
    videomae_weights.load_into(path, config)


def test_a_file_that_is_not_a_zip_checkpoint_is_refused(tmp_path):
  legacy = tmp_path / 'legacy.pth'
  legacy.write_bytes(b'\x80\x02not a zip')
  with pytest.raises(checkpoint.CheckpointError, match='PyTorch < 1.6'):
    videomae_weights.read_state_dict(str(legacy))
  with pytest.raises(FileNotFoundError, match='no such checkpoint'):
    videomae_weights.read_state_dict(str(tmp_path / 'absent.safetensors'))
  assert zipfile.is_zipfile(os.path.join(FIXTURE, FILES['original', 'pretrainer']))


def test_converted_pretrainer_initialises_a_classifier(tmp_path, hf_config):
  output = str(tmp_path / 'pretrained.npz')
  videomae_weights.main(['--checkpoint', os.path.join(FIXTURE, FILES['original', 'pretrainer']),
                         '--output', output,
                         '--num_heads', str(hf_config['num_attention_heads'])])
  _, pretrained, updates = videomae_weights.load(
      os.path.join(FIXTURE, FILES['original', 'pretrainer']))
  config = _model_config({k: v for k, v in updates.items() if not k.startswith('decoder')})
  config.update(num_heads=hf_config['num_attention_heads'], num_classes=7)
  model = vit.build_classifier(config)
  frames = jnp.zeros((1, config.num_frames, config.image_size, config.image_size, 3))
  target = model.init(jax.random.key(0), frames, train=False)['params']
  loaded = checkpoint.load_params(output, target, prefixes=('patch_embed', 'encoder'))
  np.testing.assert_array_equal(loaded['encoder']['block_1']['attn']['qkv']['kernel'],
                                pretrained['encoder']['block_1']['attn']['qkv']['kernel'])
  np.testing.assert_array_equal(loaded['head']['kernel'], target['head']['kernel'])
