r"""Writes the VideoMAE parity fixture: PyTorch models, their weights, inputs and outputs.

Needs `torch`, `transformers` and `safetensors` (not the project's dependencies: run it
in their own environment); the tests that read its output (tests/test_videomae_weights.py)
need neither. For each size it builds `transformers`' `VideoMAEForVideoClassification`
(mean pooling, fc-norm) and `VideoMAEForPreTraining` (norm-pix targets) with random
weights (every tensor drawn, so a transposed or misplaced weight shows), runs them on
fixed clips and tube masks, and writes

  {size}/config.json                     the Hugging Face config
  {size}/hf_classifier.safetensors       Hugging Face layout
  {size}/hf_pretrainer.safetensors
  {size}/original_classifier.pth         the VideoMAE repository's layout (torch.save)
  {size}/original_pretrainer.pth         of the same weights, wrapped in {'model': ...}
  {size}/io.npz                          pixel_values [B, T, C, H, W] (ImageNet-
                                         standardised), bool_masked_pos [B, N], and the
                                         outputs: classifier_logits, pretrainer_logits,
                                         pretrainer_loss

  pip install torch transformers safetensors   # in a separate environment
  python benchmarks/videomae_parity_fixture.py --output=tests/data/videomae --sizes=small
  python benchmarks/videomae_parity_fixture.py --output=/tmp/videomae_record \
      --sizes=vit_s,vit_b
  VIDEOMAE_FIXTURE=/tmp/videomae_record/vit_b pytest tests/test_videomae_weights.py
"""

import argparse
import json
import os
import re

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

SIZES = {
    # Two encoder blocks, one decoder block: a fixture of about 1 MB.
    'small': dict(image_size=32, patch_size=8, num_frames=4, hidden_size=64,
                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                  decoder_hidden_size=32, decoder_num_hidden_layers=1,
                  decoder_num_attention_heads=2, decoder_intermediate_size=128,
                  num_labels=5, batch=2),
    'vit_s': dict(image_size=224, patch_size=16, num_frames=16, hidden_size=384,
                  num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                  decoder_hidden_size=192, decoder_num_hidden_layers=4,
                  decoder_num_attention_heads=3, decoder_intermediate_size=768,
                  num_labels=400, batch=1),
    'vit_b': dict(image_size=224, patch_size=16, num_frames=16, hidden_size=768,
                  num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  decoder_hidden_size=384, decoder_num_hidden_layers=4,
                  decoder_num_attention_heads=6, decoder_intermediate_size=1536,
                  num_labels=400, batch=1),
}
MASK_RATIO = 0.75


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
  """Draws every parameter: N(0, 0.05), LayerNorm scales around 1."""
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=generator) * 0.05
      is_norm_scale = re.search(r'(norm[^.]*|layernorm_\w+)\.weight$', name)
      param.copy_(noise + 1.0 if is_norm_scale else noise)


def _attention_to_original(state: dict, src: str, dst: str) -> dict:
  """One HF block's tensors -> the original repository's names (fused qkv)."""
  a = f'{src}.attention.attention'
  q_bias = state.get(f'{a}.q_bias', state.get(f'{a}.query.bias'))
  v_bias = state.get(f'{a}.v_bias', state.get(f'{a}.value.bias'))
  return {
      f'{dst}.norm1.weight': state[f'{src}.layernorm_before.weight'],
      f'{dst}.norm1.bias': state[f'{src}.layernorm_before.bias'],
      f'{dst}.attn.qkv.weight': torch.cat([state[f'{a}.{n}.weight']
                                           for n in ('query', 'key', 'value')]),
      f'{dst}.attn.q_bias': q_bias,
      f'{dst}.attn.v_bias': v_bias,
      f'{dst}.attn.proj.weight': state[f'{src}.attention.output.dense.weight'],
      f'{dst}.attn.proj.bias': state[f'{src}.attention.output.dense.bias'],
      f'{dst}.norm2.weight': state[f'{src}.layernorm_after.weight'],
      f'{dst}.norm2.bias': state[f'{src}.layernorm_after.bias'],
      f'{dst}.mlp.fc1.weight': state[f'{src}.intermediate.dense.weight'],
      f'{dst}.mlp.fc1.bias': state[f'{src}.intermediate.dense.bias'],
      f'{dst}.mlp.fc2.weight': state[f'{src}.output.dense.weight'],
      f'{dst}.mlp.fc2.bias': state[f'{src}.output.dense.bias'],
  }


def to_original(state: dict, pretrainer: bool, config) -> dict:
  """A Hugging Face VideoMAE state dict in the VideoMAE repository's layout."""
  stem = 'encoder.' if pretrainer else ''
  out = {
      f'{stem}patch_embed.proj.weight':
          state['videomae.embeddings.patch_embeddings.projection.weight'],
      f'{stem}patch_embed.proj.bias':
          state['videomae.embeddings.patch_embeddings.projection.bias'],
  }
  for i in range(config.num_hidden_layers):
    out.update(_attention_to_original(state, f'videomae.encoder.layer.{i}',
                                      f'{stem}blocks.{i}'))
  if not pretrainer:
    out.update({'fc_norm.weight': state['fc_norm.weight'], 'fc_norm.bias': state['fc_norm.bias'],
                'head.weight': state['classifier.weight'], 'head.bias': state['classifier.bias']})
    return out
  for i in range(config.decoder_num_hidden_layers):
    out.update(_attention_to_original(state, f'decoder.decoder_layers.{i}',
                                      f'decoder.blocks.{i}'))
  out.update({
      'encoder.norm.weight': state['videomae.layernorm.weight'],
      'encoder.norm.bias': state['videomae.layernorm.bias'],
      'encoder_to_decoder.weight': state['encoder_to_decoder.weight'],
      'mask_token': state['mask_token'],
      'decoder.norm.weight': state['decoder.norm.weight'],
      'decoder.norm.bias': state['decoder.norm.bias'],
      'decoder.head.weight': state['decoder.head.weight'],
      'decoder.head.bias': state['decoder.head.bias'],
  })
  return out


def tube_mask(batch: int, config, generator: torch.Generator) -> torch.Tensor:
  """The same spatial positions masked on every frame, MASK_RATIO of them per example."""
  per_frame = (config.image_size // config.patch_size) ** 2
  frames = config.num_frames // config.tubelet_size
  num_masked = int(MASK_RATIO * per_frame)
  masks = []
  for _ in range(batch):
    spatial = torch.zeros(per_frame, dtype=torch.bool)
    spatial[torch.randperm(per_frame, generator=generator)[:num_masked]] = True
    masks.append(spatial.repeat(frames))
  return torch.stack(masks)


def write(size: str, output: str) -> None:
  spec = dict(SIZES[size])
  batch = spec.pop('batch')
  directory = os.path.join(output, size)
  os.makedirs(directory, exist_ok=True)
  generator = torch.Generator().manual_seed(0)
  # Released Hugging Face VideoMAE configs: LayerNorm eps 1e-12 in the blocks.
  classifier_config = transformers.VideoMAEConfig(use_mean_pooling=True, **spec)
  pretrainer_config = transformers.VideoMAEConfig(use_mean_pooling=False, norm_pix_loss=True,
                                                  **spec)
  classifier = transformers.VideoMAEForVideoClassification(classifier_config).eval()
  pretrainer = transformers.VideoMAEForPreTraining(pretrainer_config).eval()
  randomise(classifier, generator)
  randomise(pretrainer, generator)

  clip = torch.rand((batch, spec['num_frames'], 3, spec['image_size'], spec['image_size']),
                    generator=generator)
  mean = torch.tensor([0.485, 0.456, 0.406])[None, None, :, None, None]
  std = torch.tensor([0.229, 0.224, 0.225])[None, None, :, None, None]
  pixel_values = (clip - mean) / std
  masked = tube_mask(batch, pretrainer_config, generator)
  with torch.no_grad():
    logits = classifier(pixel_values=pixel_values).logits
    pretrained = pretrainer(pixel_values=pixel_values, bool_masked_pos=masked)

  classifier_state = {k: v.contiguous() for k, v in classifier.state_dict().items()}
  pretrainer_state = {k: v.contiguous() for k, v in pretrainer.state_dict().items()}
  save_file(classifier_state, os.path.join(directory, 'hf_classifier.safetensors'))
  save_file(pretrainer_state, os.path.join(directory, 'hf_pretrainer.safetensors'))
  torch.save({'model': to_original(classifier_state, False, classifier_config)},
             os.path.join(directory, 'original_classifier.pth'))
  torch.save({'model': to_original(pretrainer_state, True, pretrainer_config),
              'epoch': 799}, os.path.join(directory, 'original_pretrainer.pth'))
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(classifier_config.to_dict(), f, indent=1, default=str)
  np.savez(os.path.join(directory, 'io.npz'), pixel_values=pixel_values.numpy(),
           bool_masked_pos=masked.numpy(), classifier_logits=logits.numpy(),
           pretrainer_logits=pretrained.logits.numpy(),
           pretrainer_loss=np.float32(pretrained.loss.item()))
  print(f'{size}: wrote {directory} (transformers {transformers.__version__}, '
        f'torch {torch.__version__}).')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', default='tests/data/videomae')
  parser.add_argument('--sizes', default='small', help=f'comma-separated of {sorted(SIZES)}')
  args = parser.parse_args()
  for size in args.sizes.split(','):
    write(size, args.output)


if __name__ == '__main__':
  main()
