r"""Runs the released Ego4D MooG checkpoints: backbone + point-track + box-track heads.

The three released files (representations4d README; the colab downloads them from
`https://storage.googleapis.com/representations4d/checkpoints/`):

  moog_ego4d_backbone_ckpt_164335139.npz          MooG backbone (`model.ego4d_model_config`)
  moog_ego4d_point_track_head_ckpt_164335139.npz  `attention_heads.AttentionPointReadout`
  moog_ego4d_box_track_head_ckpt_164335139.npz    `attention_heads.AttentionBoxReadout`

Typical use::

  config = ego4d.released_config()
  params = ego4d.load_released_files(config, backbone_npz, point_head_npz, box_head_npz)
  out = ego4d.run_released(params, video, query_xy=query_xy, query_boxes=query_boxes,
                           config=config)

What `run_released` does, in the colab's order (docs/moog_reference.md §10, §12):

1. the backbone runs over the clip (video [b, T, R, R, 3] in [0, 1], T = 16, R = 256),
   the initial state drawn from the 'default' rng (`seed`), evaluation mode;
2. features = the corrected states of frames 0 .. T-1 *before* the state LayerNorm,
   [b, T, 1024, 512] (`MooG(return_corrected_prenorm=True)`; see `MooG.step` for why
   this equals the colab's `features` and what differs: the noise draw only);
3. the point head reads them with frame-0 queries `query_xy` [b, N, 2] = (x, y) / (W, H)
   in [0, 1] (TAP-Vid (t, y, x) pixels -> `heads.normalise_query_points`);
4. the box head reads them with frame-0 boxes `query_boxes` [b, K, 4], normalised
   (ymin, xmin, ymax, xmax).

Outputs follow this project's batch contract: points track-major (`position` [b, N, T, 2]
normalised (x, y), `visible` [b, N, T] bool ...), boxes time-major (`boxes` [b, T, K, 4],
raw). The colab's point output is time-major ([b, T, N, 2], `visible` as a 0/1 float).

The backbone's pixel decoder is not needed by the heads (the colab never runs it); here
it still runs inside `MooG.step`, on a single-pixel lattice per frame
(`subsample_factor_eval = resolution`), so it costs next to nothing.

Loading is strict (`moog/released/npz_io.py`): missing, unexpected or mis-shaped names are listed.
The backbone's inner key names below the top-level module are an assumption of
`npz_io` (documented there); the heads' names are derived from the colab's modules.

Sizes come from a config (`released_config`, or `tiny_config` for CPU tests): `model`
(MooG sizes), `point_head` / `box_head` (`attention_heads` sizes), `num_frames` and
`resolution` (square frames).
"""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jaxtyping import Array, Float

from moog import model as moog_model
from moog.readouts import attention_heads
from moog.released import npz_io

NUM_FRAMES = 16
RESOLUTION = 256
RELEASED_FILES = {
    'backbone': 'moog_ego4d_backbone_ckpt_164335139.npz',
    'point_head': 'moog_ego4d_point_track_head_ckpt_164335139.npz',
    'box_head': 'moog_ego4d_box_track_head_ckpt_164335139.npz',
}
RELEASED_URL = 'https://storage.googleapis.com/representations4d/checkpoints/'


def released_config() -> ml_collections.ConfigDict:
  """The released sizes: Ego4D backbone (35.2 M), point head (11.3 M), box head (11.4 M)."""
  return ml_collections.ConfigDict(dict(
      model=moog_model.ego4d_model_config(),
      point_head=attention_heads.released_point_head_config(),
      box_head=attention_heads.released_box_head_config(),
      num_frames=NUM_FRAMES,
      resolution=RESOLUTION,
  ))


def tiny_config() -> ml_collections.ConfigDict:
  """The released structure at tiny sizes (8 frames of 32x32), for CPU tests and CI.

  Same layers and tiling rules as `released_config` (concatenated encoder PE; points
  in tiles of 2 frames, one box tile for all frames), a few thousand parameters.
  """
  model = moog_model.tiny_model_config()
  model.encoder_pos_embedding = 'concat'
  num_frames = 8
  heads = dict(num_frames=num_frames, width=16, mlp_ratio=2, query_dim=8, query_hidden=8,
               num_fourier_bases=2, features='corrected', finetune=False)
  return ml_collections.ConfigDict(dict(
      model=model,
      point_head=dict(kind='points', num_tiles=num_frames // 2, num_heads=2, **heads),
      box_head=dict(kind='boxes', num_tiles=1, num_heads=2, **heads),
      num_frames=num_frames,
      resolution=32,
  ))


CONFIGS = {'released': released_config, 'tiny': tiny_config}


def get_config(sizes: str = 'released') -> ml_collections.ConfigDict:
  """`released_config()` or `tiny_config()` by name."""
  if sizes not in CONFIGS:
    raise ValueError(f'sizes must be one of {sorted(CONFIGS)}, got {sizes!r}.')
  return CONFIGS[sizes]()


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field that does not fit."""
  moog_model.validate_model_config(config.model)
  for name, kind in (('point_head', 'points'), ('box_head', 'boxes')):
    head = config[name]
    if head.kind != kind:
      raise ValueError(f'{name}.kind must be {kind!r}, got {head.kind!r}.')
    if head.num_frames != config.num_frames:
      raise ValueError(f'{name}.num_frames={head.num_frames} != num_frames='
                       f'{config.num_frames}: the heads read whole clips.')
  stride = math.prod(config.model.encoder_strides)
  if config.resolution % stride:
    raise ValueError(f'resolution {config.resolution} is not divisible by the encoder '
                     f'stride {stride}.')


class ReleasedModels:
  """The backbone and both heads of a config, with a jitted forward pass.

  Attributes:
    config: the sizes (see the module docstring).
    backbone: `MooG` returning `states_corrected_prenorm`, decoding one pixel per frame.
    point_head, box_head: the attention readouts.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    validate_config(config)
    self.config = config
    self.backbone = moog_model.build_moog(config.model).clone(
        return_corrected_prenorm=True, subsample_factor_eval=config.resolution)
    self.point_head = attention_heads.build_attention_readout(config.point_head)
    self.box_head = attention_heads.build_attention_readout(config.box_head)
    self._forward = jax.jit(self._forward_impl)

  @property
  def video_shape(self) -> tuple[int, int, int, int]:
    """[T, R, R, 3] of one clip."""
    c = self.config
    return (c.num_frames, c.resolution, c.resolution, 3)

  def abstract_params(self) -> dict:
    """{'backbone', 'point_head', 'box_head'}: ShapeDtypeStructs on the first device."""
    video = jnp.zeros((1, *self.video_shape))
    features = jnp.zeros((1, self.config.num_frames, self.config.model.num_tokens,
                          self.config.model.token_dim))
    rngs = {'params': jax.random.key(0), 'default': jax.random.key(1)}
    shapes = dict(
        backbone=jax.eval_shape(functools.partial(self.backbone.init, train=False),
                                rngs, video)['params'],
        point_head=jax.eval_shape(self.point_head.init, rngs['params'], features,
                                  jnp.zeros((1, 1, 2)))['params'],
        box_head=jax.eval_shape(self.box_head.init, rngs['params'], features,
                                jnp.zeros((1, 1, 4)))['params'],
    )
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), shapes)

  def features(self, backbone_params, video: Float[Array, 'b T H W 3'],
               rng: jax.Array) -> Float[Array, 'b T n d']:
    """The heads' features: corrected states before the state LayerNorm."""
    outputs = self.backbone.apply({'params': backbone_params}, video, train=False,
                                  rngs={'default': rng})
    return outputs['states_corrected_prenorm']

  def _forward_impl(self, params, video, query_xy, query_boxes, rng):
    features = self.features(params['backbone'], video, rng)
    outputs = {'features': features}
    if query_xy is not None:
      outputs.update(self.point_head.apply({'params': params['point_head']}, features,
                                           query_xy))
    if query_boxes is not None:
      outputs.update(self.box_head.apply({'params': params['box_head']}, features,
                                         query_boxes))
    return outputs

  def __call__(self, params: dict, video, query_xy=None, query_boxes=None,
               seed: int = 0) -> dict[str, np.ndarray]:
    """See `run_released`."""
    video = jnp.asarray(video, jnp.float32)
    if video.ndim != 5 or tuple(video.shape[1:]) != self.video_shape:
      raise ValueError(f'video must be [b, {", ".join(map(str, self.video_shape))}] in '
                       f'[0, 1]; got {video.shape}. Resize / cut it first '
                       '(e.g. `prepare_clip`).')
    as_array = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
    outputs = self._forward(params, video, as_array(query_xy), as_array(query_boxes),
                            jax.random.key(seed))
    return jax.device_get(outputs)


@functools.lru_cache(maxsize=4)
def _models(config_json: str) -> ReleasedModels:
  return ReleasedModels(ml_collections.ConfigDict(json.loads(config_json)))


def models_for(config: ml_collections.ConfigDict | None = None) -> ReleasedModels:
  """`ReleasedModels` of `config` (default `released_config()`), cached by value."""
  return _models((config or released_config()).to_json())


def run_released(
    params: dict,
    video: Float[Array, 'b T H W 3'],
    query_xy: Float[Array, 'b N 2'] | None = None,
    query_boxes: Float[Array, 'b K 4'] | None = None,
    *,
    config: ml_collections.ConfigDict | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Backbone + point head + box head on a clip, as the colab runs them.

  Args:
    params: {'backbone', 'point_head', 'box_head'} parameter trees (e.g.
      `load_released_files`); a head may be missing if its queries are None.
    video: [b, T, R, R, 3] in [0, 1] (T = `config.num_frames`, R = `config.resolution`).
    query_xy: [b, N, 2] frame-0 point queries, (x, y) / (W, H) in [0, 1]; None = no
      point head.
    query_boxes: [b, K, 4] frame-0 boxes, normalised (ymin, xmin, ymax, xmax); None =
      no box head.
    config: the sizes; default `released_config()`.
    seed: the 'default' rng of the backbone's random initial state.

  Returns:
    Host arrays: 'features' [b, T, n, d]; with points 'position' [b, N, T, 2]
    normalised (x, y), 'visibility_logit', 'certainty_logit', 'visible' [b, N, T];
    with boxes 'boxes' [b, T, K, 4].
  """
  return models_for(config)(params, video, query_xy, query_boxes, seed)


def load_released_files(config: ml_collections.ConfigDict | None, backbone_npz: str,
                        point_head_npz: str | None = None,
                        box_head_npz: str | None = None) -> dict:
  """Loads released-layout `.npz` files (strict, via `npz_io`) onto the first device.

  Args:
    config: the sizes; None = `released_config()`.
    backbone_npz: `moog_ego4d_backbone_ckpt_164335139.npz` (released key layout).
    point_head_npz, box_head_npz: the head files; None or '' = not loaded.

  Returns:
    {'backbone': ..., 'point_head': ..., 'box_head': ...} (the heads given).
  """
  abstract = models_for(config).abstract_params()
  params = {'backbone': npz_io.load_released(backbone_npz, abstract['backbone'])}
  for name, path in (('point_head', point_head_npz), ('box_head', box_head_npz)):
    if path:
      params[name] = npz_io.load_released_head(path, abstract[name])
  return params


def write_random_released_files(config: ml_collections.ConfigDict, directory: str,
                                seed: int = 0, scale: float = 0.1) -> dict[str, str]:
  """Random parameters of `config`'s sizes, written in the released key layout.

  For tests and CI (every leaf N(0, scale²), norms and embeddings included); the files
  are named as the released ones. Returns {'backbone', 'point_head', 'box_head': path}.
  """
  abstract = models_for(config).abstract_params()
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda leaf: (scale * rng.standard_normal(leaf.shape)).astype(leaf.dtype), abstract)
  os.makedirs(directory, exist_ok=True)
  paths = {name: os.path.join(directory, filename)
           for name, filename in RELEASED_FILES.items()}
  npz_io.save_released_layout(paths['backbone'], params['backbone'])
  npz_io.save_released_head_layout(paths['point_head'], params['point_head'])
  npz_io.save_released_head_layout(paths['box_head'], params['box_head'])
  return paths


def prepare_clip(video: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """[T', H, W, 3] (uint8 or float in [0, 1]) -> [T, R, R, 3] float32 in [0, 1].

  Keeps the first `config.num_frames` frames (as the colab) and resizes them bilinearly
  to the square `config.resolution` (normalised coordinates are unchanged by the
  resize). Raises ValueError if the video is too short.
  """
  video = np.asarray(video)
  if video.ndim != 4 or video.shape[-1] != 3:
    raise ValueError(f'video must be [T, H, W, 3], got {video.shape}.')
  if video.shape[0] < config.num_frames:
    raise ValueError(f'The heads read clips of {config.num_frames} frames; the video has '
                     f'{video.shape[0]}.')
  if video.dtype == np.uint8:
    video = video.astype(np.float32) / 255.0
  video = video[:config.num_frames].astype(np.float32)
  size = (config.num_frames, config.resolution, config.resolution, 3)
  if video.shape != size:
    video = np.asarray(jax.image.resize(video, size, method='bilinear'))
  return np.clip(video, 0.0, 1.0)
