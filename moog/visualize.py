r"""Renders where a trained MooG run's state tokens look, as a GIF.

  python -m moog.visualize --workdir=runs/moog_tiny --out=/tmp/tokens.gif
  python -m moog.visualize --workdir=runs/moog_tiny --out=/tmp/tokens.gif \
      --config=configs/moog_tiny.py --num_videos=2 --num_tokens=16

The run's config is read from its newest checkpoint (each checkpoint stores it), unless
`--config` is given (then a checkpoint of a different `config.model` is refused). MooG
runs in evaluation mode on the first `--num_videos` validation videos. Each GIF frame
shows, per video (one row each), the input frame with the attention centroid of the
first `--num_tokens` state tokens (coloured dots with their trails so far; see
`moog/token_tracking.py`) next to the model's full-resolution prediction of that frame
from the frames before it. The token-consistency score over the rendered videos, with
the ground-truth segmentations, is printed as JSON together with the GIF's path, frame
count and size. Only GIF output is supported (no ffmpeg is needed). `--still=PATH.png`
also writes one picture of the same videos without token tracks: per video, the real
frames 1..T-1 side by side above the model's predictions of them.
"""

import functools
import json
import os
from typing import NamedTuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
from PIL import Image
import tqdm

from moog import grid_baselines
from moog import token_tracking
from videolib import checkpoint
from videolib import writers
from videolib.data import pipeline

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory (its checkpoints/).')
_OUT = flags.DEFINE_string('out', None, 'Output GIF path.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Optional config file; default: the config stored in the checkpoint.'
)
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 2, 'Validation videos to render (rows).')
_NUM_TOKENS = flags.DEFINE_integer('num_tokens', 16, 'State tokens whose tracks are drawn.')
_FPS = flags.DEFINE_float('fps', 4.0, 'GIF frame rate.')
_SCALE = flags.DEFINE_integer('scale', 8, 'Nearest-neighbour upscaling of the frames.')
_STILL = flags.DEFINE_string('still', None, 'Optional PNG: real frames above predictions.')



def restore_run(
    workdir: str, config: ml_collections.ConfigDict | None = None
) -> tuple[ml_collections.ConfigDict, dict, str]:
  """The config and parameters of the newest checkpoint in `workdir`, on one device.

  The parameters come from `videolib.checkpoint.read_run_params`, so a run trained on
  any number of devices can be visualised on any machine.

  Args:
    workdir: training run directory.
    config: optional config; a checkpoint written by a different `config.model` is
      refused with the differing fields. None uses the stored config.

  Returns:
    `(config, params, source)`: the config used, the parameters as host-side arrays, and
    the checkpoint path they came from.
  """
  params, saved_config, source = checkpoint.read_run_params(workdir, role='--workdir')
  if config is None:
    config = ml_collections.ConfigDict(saved_config)
  checkpoint.refuse_if_different(
      checkpoint.config_differences(saved_config, checkpoint.config_to_json(config), 'model'),
      source=source, refusing='run it with this config.model')
  return config, jax.device_get(params), source


class ModelRun(NamedTuple):
  """What `run_model` returns for a batch of videos `[b, T, H, W, 3]`.

  Attributes:
    predicted: `[b, T, H, W, 3]` full-resolution next-frame predictions (frame t from
      frames < t).
    corrector_maps: `[b, T, n, h, w]` the last corrector block's cross-attention over
      the encoder grid, averaged over heads (`token_tracking.attention_maps`).
    decoder_maps: `[b, T, n, H, W]` the last decoder block's cross-attention while
      decoding `predicted` (`token_tracking.decoder_responsibility_maps`); None unless
      asked for (at the paper's sizes it is gigabytes per video).
  """

  predicted: np.ndarray
  corrector_maps: jax.Array
  decoder_maps: jax.Array | None


def run_model(
    config: ml_collections.ConfigDict, params: dict, source: str, video: np.ndarray,
    *, decoder_maps: bool = False,
) -> ModelRun:
  """Runs the run's model on `video` in evaluation mode.

  Args:
    config: the run's config.
    params: its parameters, checked here against the model by name and shape.
    source: where `params` came from, for error messages.
    video: `[b, T, H, W, 3]` float frames in [0, 1].
    decoder_maps: also return the decoder's per-token maps.

  Returns:
    The predictions and the attention maps (`ModelRun`).
  """
  model = grid_baselines.build_backbone(grid_baselines.backbone_kind(config), config.model)
  height, width = video.shape[-3:-1]
  stride = int(np.prod(config.model.encoder_strides))
  grid_shape = (height // stride, width // stride)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  video_spec = jax.ShapeDtypeStruct(video.shape, jnp.float32)
  abstract_variables = jax.eval_shape(
      lambda rng, video: model.init({'params': rng, 'default': rng}, video, train=True),
      jax.random.key(0), video_spec,
  )
  abstract_params = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
      abstract_variables['params'],
  )
  params = checkpoint.place_params(params, abstract_params, source=source)

  @jax.jit
  def apply(params, video, rng):
    outputs, state = model.apply(
        {'params': params}, video, train=False, rngs={'default': rng},
        mutable=['intermediates'],
    )
    corrector_maps = token_tracking.attention_maps(
        token_tracking.corrector_cross_attention(state['intermediates']), grid_shape)
    decode = functools.partial(model.apply, {'params': params}, outputs['states_predicted'],
                               height, width, method=model.decode_frame)
    if not decoder_maps:
      return ModelRun(decode(), corrector_maps, None)
    predicted, decoding = decode(mutable=['intermediates'])
    return ModelRun(predicted, corrector_maps, token_tracking.decoder_responsibility_maps(
        decoding['intermediates'], (height, width)))

  run = apply(params, jnp.asarray(video), jax.random.key(config.seed))
  return run._replace(predicted=np.asarray(run.predicted))


def visualize_run(
    workdir: str,
    out_path: str,
    config: ml_collections.ConfigDict | None = None,
    *,
    num_videos: int = 2,
    num_tokens: int = 16,
    fps: float = 4.0,
    scale: int = 8,
    still_path: str | None = None,
) -> dict:
  """Writes the token-track GIF of a run (see the module docstring).

  Args:
    workdir: training run directory.
    out_path: where the GIF goes; must end in `.gif`.
    config: the run's config; None reads it from the newest checkpoint.
    num_videos: validation videos rendered, one row each.
    num_tokens: state tokens drawn (the first ones; all if the model has fewer).
    fps: GIF frame rate.
    scale: upscaling factor of the drawn frames.
    still_path: optional PNG path: per video, real frames 1..T-1 above their predictions.

  Returns:
    `{'out', 'num_frames', 'size' (width, height), 'token_consistency',
    'bound_token_fraction'}` over all tokens of the rendered videos
    (`token_tracking.token_consistency`; the consistency is NaN when no token is bound).
  """
  if not out_path.lower().endswith('.gif'):
    raise ValueError(f'--out={out_path!r}: only GIF output is supported (use a .gif path).')
  if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
    raise FileNotFoundError(
        f'--workdir={workdir!r} has no {checkpoint.CHECKPOINT_SUBDIR}/: pass the workdir of '
        'a training run.')
  config, params, source = restore_run(workdir, config)
  data_config = pipeline.completed_config(config.data)
  data_config.features = ('video', 'segmentations')
  data_config.num_eval_examples = num_videos
  batch = next(pipeline.make_eval_iterator(
      data_config, global_batch_size=num_videos, process_index=0, process_count=1))
  real = batch['_mask']
  video = batch['video'][real]
  segmentations = batch['segmentations'][real][..., 0]
  frame_shape = video.shape[-3:-1]

  predicted, maps, _ = run_model(config, params, source, video)
  centroids = np.asarray(token_tracking.attention_centroids(maps, frame_shape))
  consistency = token_tracking.token_consistency(
      maps, jnp.asarray(segmentations), num_segments=int(segmentations.max()) + 1)

  drawn_tokens = min(num_tokens, centroids.shape[-2])
  colours = token_tracking.token_colours(drawn_tokens)
  video_uint8 = np.round(video * 255).astype(np.uint8)
  predicted_uint8 = np.round(np.clip(predicted, 0.0, 1.0) * 255).astype(np.uint8)
  num_frames = video.shape[1]
  gif_frames = []
  for t in tqdm.tqdm(range(num_frames), desc='Rendering frames', unit='frame'):
    rows = [
        np.concatenate([
            token_tracking.draw_tracks(video_uint8[v, t], centroids[v, : t + 1, :drawn_tokens], scale,
                        colours),
            token_tracking.upscale(predicted_uint8[v, t], scale),
        ], axis=1)
        for v in range(len(video))
    ]
    gif_frames.append(np.concatenate(rows, axis=0))
  writers.write_gif(out_path, np.stack(gif_frames), fps)
  if still_path:
    rows = [np.concatenate(list(frames[1:]), axis=1)
            for v in range(len(video)) for frames in (video_uint8[v], predicted_uint8[v])]
    Image.fromarray(token_tracking.upscale(np.concatenate(rows, axis=0), scale)).save(
        still_path)
  height, width = gif_frames[0].shape[:2]
  result = dict(out=out_path, num_frames=num_frames, size=[width, height],
                token_consistency=float(consistency['consistency']),
                bound_token_fraction=float(consistency['bound_fraction']))
  if np.isnan(result['token_consistency']):
    result['note'] = (
        'token_consistency is NaN because no token is bound: at frame 0 no token attends '
        'to any ground-truth segment at least twice as much as uniform attention would. '
        'This is what a model on the mean-colour plateau (spatially constant predictions) '
        'looks like; train longer, or check that next-frame PSNR is above psnr_mean_colour.')
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  result = visualize_run(
      _WORKDIR.value, _OUT.value, _CONFIG.value, num_videos=_NUM_VIDEOS.value,
      num_tokens=_NUM_TOKENS.value, fps=_FPS.value, scale=_SCALE.value,
      still_path=_STILL.value,
  )
  print(json.dumps(result))


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'out'])
  app.run(main)
