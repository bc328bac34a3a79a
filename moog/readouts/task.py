"""Readout heads (points, depth, boxes) trained on frozen MooG / Grid / Grid Rec. states.

The task for the shared trainer (`videolib/train.py`). Its parameters are one flat dict:
the backbone's parts (`encoder`, `predictor`, `corrector`, `decoder`, `state_norm`, and
`initial_tokens` with `model.state_init='learned'`), loaded from the pretraining run
`config.init_from` (`ReadoutTask.init_from_prefixes` names exactly those parts), next to
the heads `point_readout`, `depth_readout`, `box_readout`. With
`config.readout.finetune=False` (the default) the backbone is frozen twice over: the heads stop gradients into its states, and `frozen_params` makes the
trainer give its parameters `optax.set_to_zero()` (no update, no weight decay, no
optimizer state), so they stay bitwise equal to the checkpoint (tested).

Protocol (the points docs/evaluation_reference.md §6 and docs/moog_reference.md §14 leave
open, decided here):

* Queries and conditioning: points are queried on frame 0 (the pipeline re-bases every
  track to the window's first frame, where it is visible), boxes are conditioned on
  their frame-0 box; box tracks without a frame-0 box have no query and are not scored.
* Points, headline (`points_first/*`): TAP-Vid `first` mode on the frame-0 queries
  (scored frames 1..T-1), MooG's protocol. Also `points_strided/*`: TAP-Vid strided
  queries (every 5th frame, each track visible there becomes a query), scored on every
  frame but the query frame; frames before a query are tracked by the same causal model
  run on the time-reversed video from the query frame. Metrics on a 256 x 256 raster,
  per video, then a plain mean over videos (`videolib.metrics.tapvid_metrics`).
* Depth (`depth/*`): AbsRel and δ < 1.25 in metric units, decoded at the ground-truth
  resolution on every frame, pooled over valid pixels.
* Boxes (`boxes/box_iou`): mean IoU over valid (video, track, frame) entries after
  frame 0 (the conditioning frame is excluded).
* Trivial baselines on the same batches (`static_points_*`, `static_boxes/*`,
  `constant_depth/*`, reported when `readout.eval_trivial_baselines`): a point that never
  moves (its query position on every frame, always visible), a box that never moves (its
  frame-0 box), and a constant depth per video equal to the median of the video's frame-0
  ground-truth depth. The point and box baselines use exactly the information the heads
  are given (the queries); the depth one uses frame-0 ground truth that the depth head
  never sees, so it is an oracle-scale constant, stronger than a dataset prior.
* Evaluation runs in temporal slices of `readout.eval_slice_frames` frames that carry
  MooG's and the readouts' states (`moog/readouts/sliced_eval.py`), so a 24-frame video is
  evaluated with the memory of a short slice; the outputs equal one pass.
* The state sequence read by the heads is `readout.features` ('predicted', 'corrected'
  or 'concat'); it is logged at start-up and saved with the config in every checkpoint.

Point and box heads: `readout.tracking_head='recurrent'` (MooG's, above) or
'correlation' (`readout_heads.CorrelationPointReadout` / `CorrelationBoxReadout`: template
matching on a feature map decoded from the states, with the cost-volume cross-entropy
`readout_heads.correlation_loss` added to the point loss, weight `readout.correlation_weight`).

Training: one pass over the training window (`data.num_frames`), the sum of the enabled
heads' losses (`moog/readouts/heads.py`) weighted by `readout.{points,depth,boxes}_weight`;
depth is supervised on a random-phase pixel lattice (`readout.depth_subsample_train`).
Bad inputs (queries outside the frame or clip, inverted boxes, tracks never visible,
non-finite values) raise on the host before a batch reaches the devices
(`validate_batch`, run by the trainer).
"""

import copy

import einops
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from moog import grid_baselines
from moog import modules
from moog import motion_guided
from moog.readouts import heads as readout_heads
from moog.readouts import sliced_eval
from videolib import checkpoint
from videolib import metrics as metrics_lib
from videolib import task as task_lib

BACKBONE_PARTS = ('corrector', 'decoder', 'encoder', 'predictor', 'state_norm')


def backbone_parts(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Top-level parameter names of the backbone `model_config` builds, sorted.

  `BACKBONE_PARTS`, plus the learned `initial_tokens` of `state_init='learned'`.
  """
  learned = model_config.get('state_init', 'noise') == 'learned'
  return tuple(sorted(BACKBONE_PARTS + (('initial_tokens',) if learned else ())))
HEADS = ('points', 'depth', 'boxes')
TRACKING_HEADS = ('recurrent', 'correlation')
HEAD_PARAMS = {'points': 'point_readout', 'depth': 'depth_readout', 'boxes': 'box_readout'}
REQUIRED_FEATURES = {'points': 'tracks', 'depth': 'depth', 'boxes': 'boxes'}
STRIDED_QUERY_STRIDE = 5
REPORTED_TAPVID = ('average_jaccard', 'average_pts_within_thresh', 'occlusion_accuracy')
# Added after readout runs existed: those runs' heads were unanchored and their backbone
# saw every encoder token.
checkpoint.register_added_config_fields({
    'readout.anchor_to_query': False,
    'readout.tracking_head': 'recurrent',
    'readout.map_size': 0,
    'readout.map_channels': 32,
    'readout.window_radius': 2,
    'readout.correlation_weight': 1.0,
    **{f'motion_guided.{field}': value
       for field, value in motion_guided.default_config().items()},
})
checkpoint.register_execution_only_config_fields(('readout.depth_pixels_per_chunk',))


def default_readout_config() -> ml_collections.ConfigDict:
  """Readout settings (`config.readout`); head sizes follow docs/moog_reference.md §10."""
  return ml_collections.ConfigDict(dict(
      tasks=HEADS,
      features='concat',
      finetune=False,
      anchor_to_query=True,
      # 'recurrent': MooG's recurrent cross-attention heads for points and boxes;
      # 'correlation': template matching on a decoded feature map (`readouts.
      # CorrelationPointReadout`; on the tiny benchmark no better than the recurrent
      # heads, docs/results.md).
      tracking_head='recurrent',
      map_size=0,  # Cells per side of the correlation heads' map; 0 = the frame's.
      map_channels=32,
      window_radius=2,
      correlation_weight=1.0,
      width=512,
      num_layers=3,
      num_heads=8,
      qkv_size=512,
      mlp_dim=2048,
      num_fourier_bases=16,
      points_weight=1.0,
      depth_weight=1.0,
      boxes_weight=1.0,
      box_iou_weight=1.0,
      depth_subsample_train=4,
      # Full-resolution depth is decoded this many pixels at a time (0 = all at once):
      # memory, not results (`readout_heads.DenseReadout`).
      depth_pixels_per_chunk=1024,
      eval_slice_frames=0,
      eval_strided=True,
      eval_trivial_baselines=True,
  ))


def check_backbone_checkpoint(config: ml_collections.ConfigDict) -> None:
  """Refuses `config.init_from` unless it was trained with this backbone and `config.model`."""
  saved, source = checkpoint.read_run_config(config.init_from)
  current = checkpoint.config_to_json(config)
  differences = checkpoint.config_differences(saved, current, 'model')
  saved_backbone = saved.get('backbone', 'moog')
  if saved_backbone != grid_baselines.backbone_kind(config):
    differences.append(
        f'backbone: {saved_backbone!r} -> {grid_baselines.backbone_kind(config)!r}')
  saved_selection = _token_selection(saved.get('motion_guided', {}))
  current_selection = _token_selection(current.get('motion_guided', {}))
  if saved_selection != current_selection:
    differences.append(f'motion_guided: {saved_selection} -> {current_selection}')
  if saved.get('task', 'pretrain') != 'pretrain':
    differences.append(f"task: {saved.get('task')!r} (a readout run, not a pretraining run)")
  checkpoint.refuse_if_different(
      differences, source=f'config.init_from={config.init_from!r} ({source})',
      refusing='train readouts on it',
      remedy="Set config.model, config.backbone and config.motion_guided to the pretraining "
             "run's values.")


def _token_selection(motion_config: dict) -> dict:
  """The fields of a (saved) `config.motion_guided` that change the backbone's states."""
  selection = {**motion_guided.default_config().to_dict(), **motion_config}
  selection.pop('gather')  # Same states as the mask path, only cheaper.
  return selection


# ----------------------------------------------------------------------------------------
# Trivial baselines.
# ----------------------------------------------------------------------------------------


def static_point_predictions(query_points: jax.Array, num_frames: int):
  """A point that never moves: its query (x, y) on every frame, always visible.

  Args:
    query_points: [B, N, 3] (t, y, x) raster pixels.
    num_frames: T.

  Returns:
    (positions [B, N, T, 2] (x, y) raster pixels, occluded [B, N, T] all False).
  """
  query_xy = query_points[..., :0:-1]
  positions = jnp.broadcast_to(query_xy[:, :, None], query_xy.shape[:2] + (num_frames, 2))
  return positions, jnp.zeros(positions.shape[:-1], bool)


def static_box_predictions(query_boxes: jax.Array, num_frames: int) -> jax.Array:
  """A box that never moves: [B, K, 4] frame-0 boxes -> [B, T, K, 4]."""
  return jnp.broadcast_to(query_boxes[:, None], (query_boxes.shape[0], num_frames)
                          + query_boxes.shape[1:])


def constant_depth_predictions(depth: jax.Array) -> jax.Array:
  """Per video, the median of its frame-0 ground-truth depth on every pixel and frame.

  Args:
    depth: [B, T, H, W, 1] metric ground-truth depth.

  Returns:
    [B, T, H, W, 1] constant predictions.
  """
  median = jnp.median(einops.rearrange(depth[:, 0], 'b h w c -> b (h w c)'), axis=-1)
  return jnp.broadcast_to(median[:, None, None, None, None], depth.shape)


# ----------------------------------------------------------------------------------------
# Strided TAP-Vid queries.
# ----------------------------------------------------------------------------------------


def strided_queries(batch: dict[str, jax.Array], stride: int = STRIDED_QUERY_STRIDE):
  """TAP-Vid strided query sampling from the batch's ground truth.

  Every `stride`-th frame s (docs/evaluation_reference.md §1.5), each valid track visible at s becomes a query (s, y, x)
  with the track's ground truth there.

  Returns:
    dict with 'query_points' [B, S·N, 3], 'target_points' [B, S·N, T, 2], 'occluded'
    [B, S·N, T], 'tracks_valid' [B, S·N], query-frame-major (S = ceil(T / stride)).
  """
  num_frames = batch['occluded'].shape[-1]
  frames = np.arange(0, num_frames, stride)
  xy = batch['target_points'][:, :, frames]  # [B, N, S, 2]
  t = jnp.broadcast_to(jnp.asarray(frames, jnp.float32)[None, None, :], xy.shape[:-1])
  queries = jnp.stack([t, xy[..., 1], xy[..., 0]], axis=-1)
  valid = batch['tracks_valid'][:, :, None] & ~batch['occluded'][:, :, frames]
  repeat = lambda x: einops.repeat(x, 'b n ... -> b (s n) ...', s=len(frames))
  return {
      'query_points': einops.rearrange(queries, 'b n s c -> b (s n) c'),
      'target_points': repeat(batch['target_points']),
      'occluded': repeat(batch['occluded']),
      'tracks_valid': einops.rearrange(valid, 'b n s -> b (s n)'),
  }


def _reverse_time(outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
  return {name: jnp.flip(value, axis=1) for name, value in outputs.items()}


# ----------------------------------------------------------------------------------------
# The task.
# ----------------------------------------------------------------------------------------


class ReadoutTask(task_lib.Task):
  """Trains and evaluates readout heads on a frozen (or fine-tuned) backbone."""

  # A readout checkpoint resumes (or is evaluated) only under the settings that shape
  # its heads; evaluation settings (slices, baselines) may change.
  checkpoint_config_sections = tuple(f'readout.{field}' for field in (
      'tasks', 'features', 'anchor_to_query', 'tracking_head', 'map_size', 'map_channels',
      'window_radius', 'width', 'num_layers', 'num_heads', 'qkv_size', 'mlp_dim',
      'num_fourier_bases')) + (
          'motion_guided.mode', 'motion_guided.drop_ratio', 'motion_guided.threshold')

  def __init__(self, config: ml_collections.ConfigDict):
    self.backbone_kind = grid_baselines.backbone_kind(config)
    self.backbone = grid_baselines.build_backbone(self.backbone_kind, config.model)
    self.backbone_parts = backbone_parts(config.model)
    self.readout_config = config.readout
    c = config.readout
    head_args = dict(num_layers=c.num_layers, num_heads=c.num_heads, qkv_size=c.qkv_size,
                     mlp_dim=c.mlp_dim, num_fourier_bases=c.num_fourier_bases,
                     features=c.features, finetune=c.finetune)
    self.heads = {'depth': readout_heads.DenseReadout(
        output_size=1, pixels_per_chunk=c.get('depth_pixels_per_chunk', 0), **head_args)}
    if c.get('tracking_head', 'recurrent') == 'correlation':
      tracker_args = dict(map_size=c.map_size or config.data.resolution,
                          map_channels=c.map_channels, window_radius=c.window_radius,
                          **head_args)
      self.heads['points'] = readout_heads.CorrelationPointReadout(**tracker_args)
      self.heads['boxes'] = readout_heads.CorrelationBoxReadout(**tracker_args)
    else:
      # Runs saved before the field existed had unanchored heads.
      anchor = c.get('anchor_to_query', False)
      self.heads['points'] = readout_heads.PointReadout(width=c.width, anchor_to_query=anchor,
                                                   **head_args)
      self.heads['boxes'] = readout_heads.BoxReadout(width=c.width, anchor_to_query=anchor,
                                                **head_args)
    self.tasks = tuple(c.tasks)
    # A motion-guided backbone is read out with its own token selection (mask path; the
    # gather path gives the same states).
    self.motion_config = config.get('motion_guided', motion_guided.default_config())
    logging.info('Readouts %s on %s states (%s), finetune=%s.', self.tasks,
                 self.backbone_kind, c.features, c.finetune)

  @property
  def uses_correlation_loss(self) -> bool:
    return 'points' in self.tasks and isinstance(self.heads['points'],
                                                 readout_heads.CorrelationPointReadout)

  def for_cost_analysis(self, config: ml_collections.ConfigDict) -> 'ReadoutTask':
    """This task with every time loop (backbone and recurrent heads) fully unrolled."""
    unrolled = copy.copy(self)
    num_frames = config.data.num_frames
    unrolled.backbone = self.backbone.clone(scan_unroll=num_frames)
    unrolled.heads = {
        name: head.clone(scan_unroll=num_frames)
        if isinstance(head, readout_heads.RecurrentReadout) else head
        for name, head in self.heads.items()}
    return unrolled

  # ---- Config and batches ----------------------------------------------------------------

  def validate_config(self, config: ml_collections.ConfigDict) -> None:
    c = config.readout
    grid_baselines.validate_backbone_config(self.backbone_kind, config.model,
                                            config.data.resolution)
    motion_guided.validate_config(self.motion_config, self.backbone_kind)
    unknown = sorted(set(c.tasks) - set(HEADS))
    if not c.tasks or unknown:
      raise ValueError(f'config.readout.tasks={tuple(c.tasks)} must be a non-empty subset of '
                       f'{HEADS}.')
    if c.tracking_head not in TRACKING_HEADS:
      raise ValueError(f'config.readout.tracking_head={c.tracking_head!r} must be one of '
                       f'{TRACKING_HEADS}.')
    if c.map_size < 0 or c.map_channels < 1 or c.window_radius < 0:
      raise ValueError(f'config.readout: map_size={c.map_size} (0 = the frame size), '
                       f'map_channels={c.map_channels} and window_radius={c.window_radius} '
                       'must be >= 0, >= 1 and >= 0.')
    if c.features not in readout_heads.FEATURE_KEYS:
      raise ValueError(f'config.readout.features={c.features!r} must be one of '
                       f'{sorted(readout_heads.FEATURE_KEYS)}.')
    needed = {'video'} | {REQUIRED_FEATURES[task] for task in c.tasks}
    missing = sorted(needed - set(config.data.features))
    if missing:
      raise ValueError(f'config.data.features={tuple(config.data.features)} lacks {missing}, '
                       f'needed by config.readout.tasks={tuple(c.tasks)}.')
    try:
      sliced_eval.check_slice_frames(config.data.num_frames, c.eval_slice_frames)
    except ValueError as error:
      raise ValueError(f'config.readout.eval_slice_frames: {error}') from error
    resolution = config.data.resolution
    if 'depth' in c.tasks and resolution % c.depth_subsample_train:
      raise ValueError(f'config.data.resolution={resolution} is not divisible by '
                       f'config.readout.depth_subsample_train={c.depth_subsample_train}.')
    if config.init_from:
      check_backbone_checkpoint(config)
    else:
      logging.warning('config.init_from is empty: readouts train on a randomly initialised '
                      'backbone (a random-features baseline, not a pretrained one).')

  def init_from_prefixes(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """What `config.init_from` loads: exactly the backbone; the heads start fresh."""
    del config
    return self.backbone_parts

  def validate_batch(self, batch: dict[str, np.ndarray]) -> None:
    """Host-side input checks (`readout_heads.validate_readout_batch`); raises ValueError."""
    readout_heads.validate_readout_batch(batch)

  def frozen_params(self, params: dict) -> dict:
    """True on every backbone leaf unless fine-tuning; heads are always trained."""
    labels = {}
    for name, subtree in params.items():
      frozen = name in self.backbone_parts and not self.readout_config.finetune
      labels[name] = jax.tree.map(lambda _: frozen, subtree)
    return labels

  # ---- Forward ---------------------------------------------------------------------------

  def _initial_carry(self, params, batch_size, rng, point_queries, query_boxes):
    """MooG's random initial state and the readouts' embedded conditioning."""
    backbone_params = {'params': {k: params[k] for k in self.backbone_parts}}
    carry = {'backbone': self.backbone.apply(backbone_params, (batch_size,),
                                             method=self.backbone.initial_state,
                                             rngs={'default': rng})}
    if point_queries is not None:
      carry['points'] = self.heads['points'].apply(
          {'params': params['point_readout']}, point_queries[0], method='initial_state')
    if query_boxes is not None:
      carry['boxes'] = self.heads['boxes'].apply(
          {'params': params['box_readout']}, query_boxes, method='initial_state')
    return carry

  def _encoder_token_mask(self, video: jax.Array) -> jax.Array | None:
    """`config.motion_guided`'s corrector mask [B, T, N] for whole clips (None if off)."""
    return motion_guided.encoder_token_mask(video, self.backbone.encoder.total_stride,
                                            self.motion_config)

  def _apply_slice(self, params, carry, video, start, *, point_queries, query_boxes,
                   depth_coords, encoder_token_mask=None, with_correlation_logits=False):
    """Backbone and heads on the frames `[start, start + len)` of a video.

    Args:
      params: the task's parameters.
      carry: {'backbone': [B, n, d], 'points': [B, N, w], 'boxes': [B, K, w]} states.
      video: [B, L, H, W, 3] frames.
      start: index of the slice's first frame (query frames are re-based to it).
      point_queries: (query_xy [B, N, 2], query_frame [B, N] absolute) or None.
      query_boxes: [B, K, 4] frame-0 boxes or None.
      depth_coords: (y, x) in [-1, 1], [h, w, 2] or [B, L, h, w, 2], or None.
      encoder_token_mask: [B, L, N] this slice's part of the whole clip's
        `_encoder_token_mask` (so a slice's first frame is scored against the frame
        before it), or None.
      with_correlation_logits: also return a correlation point head's matching scores
        ('correlation_logits' [B, L, N, h, w], for its loss).

    Returns:
      (carry, outputs) with time on axis 1: 'position' [B, L, N, 2], 'visible'
      [B, L, N], 'visibility_logit', 'certainty_logit' [B, L, N], 'boxes'
      [B, L, K, 4], 'log_depth' [B, L, h, w, 1].
    """
    backbone_params = {'params': {k: params[k] for k in self.backbone_parts}}
    states = self.backbone.apply(backbone_params, video, train=False, state=carry['backbone'],
                                 encoder_token_mask=encoder_token_mask)
    new_carry, outputs = {'backbone': states['state']}, {}
    if point_queries is not None:
      query_xy, query_frame = point_queries
      extra = {'with_logits': True} if with_correlation_logits else {}
      points = self.heads['points'].apply({'params': params['point_readout']}, states,
                                          query_xy, query_frame - start,
                                          readout_state=carry['points'], **extra)
      new_carry['points'] = points.pop('readout_state')
      outputs.update({k: einops.rearrange(v, 'b n t ... -> b t n ...')
                      for k, v in points.items()})
    if query_boxes is not None:
      boxes = self.heads['boxes'].apply({'params': params['box_readout']}, states,
                                        query_boxes, -start, readout_state=carry['boxes'])
      new_carry['boxes'] = boxes['readout_state']
      outputs['boxes'] = boxes['boxes']
    if depth_coords is not None:
      outputs['log_depth'] = self.heads['depth'].apply({'params': params['depth_readout']},
                                                       states, depth_coords)
    return new_carry, outputs

  def run(self, params, batch, rng, *, point_queries=None, heads=HEADS, slice_frames=0,
          reverse=False):
    """Backbone + heads over the whole clip, in temporal slices carrying the states.

    Args:
      params: the task's parameters.
      batch: needs 'video' and, per head, 'boxes'.
      rng: MooG's initial-state noise.
      point_queries: (query_xy [B, N, 2] in [0, 1], query_frame [B, N]) or None.
      heads: which of the enabled heads to run.
      slice_frames: frames per slice (0 = one slice).
      reverse: run on the time-reversed video (query frames must be given reversed);
        the outputs are flipped back to the original frame order.

    Returns:
      The per-frame outputs of `_apply_slice`, time on axis 1, over all T frames.
    """
    heads = [h for h in heads if h in self.tasks]
    video = jnp.flip(batch['video'], axis=1) if reverse else batch['video']
    point_queries = point_queries if 'points' in heads else None
    query_boxes = batch['boxes'][:, 0] if 'boxes' in heads else None
    depth_coords = (modules.grid_coordinates(*video.shape[2:4]) if 'depth' in heads
                    else None)
    carry = self._initial_carry(params, video.shape[0], rng, point_queries, query_boxes)
    inputs = {'video': video, 'encoder_token_mask': self._encoder_token_mask(video)}

    def apply_slice(carry, inputs_slice, start):
      return self._apply_slice(params, carry, inputs_slice['video'], start,
                               point_queries=point_queries, query_boxes=query_boxes,
                               depth_coords=depth_coords,
                               encoder_token_mask=inputs_slice['encoder_token_mask'])

    _, outputs = sliced_eval.scan_slices(apply_slice, carry, inputs, slice_frames)
    return _reverse_time(outputs) if reverse else outputs

  # ---- Trainer protocol ------------------------------------------------------------------

  def init(self, rng: jax.Array, batch: dict) -> dict:
    backbone_rng, head_rng, default_rng = jax.random.split(rng, 3)
    video = jnp.zeros(batch['video'].shape, batch['video'].dtype)
    backbone_params = self.backbone.init({'params': backbone_rng, 'default': default_rng},
                                         video, train=False)['params']
    states = self.backbone.apply({'params': backbone_params}, video, train=False,
                                 rngs={'default': default_rng})
    params = dict(backbone_params)
    rngs = dict(zip(HEADS, jax.random.split(head_rng, len(HEADS))))
    num_tracks = batch.get('query_points', jax.ShapeDtypeStruct((video.shape[0], 1, 3),
                                                                  jnp.float32)).shape[1]
    if 'points' in self.tasks:
      params['point_readout'] = self.heads['points'].init(
          rngs['points'], states, jnp.zeros((video.shape[0], num_tracks, 2)),
          jnp.zeros((video.shape[0], num_tracks), jnp.int32))['params']
    if 'depth' in self.tasks:
      params['depth_readout'] = self.heads['depth'].init(
          rngs['depth'], states, modules.grid_coordinates(2, 2))['params']
    if 'boxes' in self.tasks:
      num_boxes = batch['boxes'].shape[2]
      params['box_readout'] = self.heads['boxes'].init(
          rngs['boxes'], states, jnp.zeros((video.shape[0], num_boxes, 4)))['params']
    return params

  def loss_fn(self, params, batch, rng):
    c = self.readout_config
    image_size = batch['video'].shape[2:4]
    init_rng, lattice_rng = jax.random.split(rng)
    point_queries = (readout_heads.normalise_query_points(batch['query_points'], image_size)
                     if 'points' in self.tasks else None)
    query_boxes = batch['boxes'][:, 0] if 'boxes' in self.tasks else None
    depth_coords = gt_depth = None
    if 'depth' in self.tasks:
      # A random-phase pixel lattice per (example, frame), as MooG's decoder is trained.
      factor = c.depth_subsample_train
      frame_shape = batch['video'].shape[:2]
      offsets = modules.sample_lattice_offsets(lattice_rng, frame_shape, factor)
      grid = jnp.broadcast_to(modules.grid_coordinates(*image_size),
                              frame_shape + tuple(image_size) + (2,))
      depth_coords = modules.lattice_subsample(grid, factor, offsets)
      gt_depth = modules.lattice_subsample(batch['depth'], factor, offsets)
    carry = self._initial_carry(params, batch['video'].shape[0], init_rng, point_queries,
                                query_boxes)
    _, outputs = self._apply_slice(params, carry, batch['video'], 0,
                                   point_queries=point_queries, query_boxes=query_boxes,
                                   depth_coords=depth_coords,
                                   encoder_token_mask=self._encoder_token_mask(batch['video']),
                                   with_correlation_logits=self.uses_correlation_loss)

    mask = batch['_mask']
    terms, total = {}, 0.0
    if 'points' in self.tasks:
      points = {k: einops.rearrange(outputs[k], 'b t n ... -> b n t ...')
                for k in ('position', 'visibility_logit', 'certainty_logit')}
      loss, parts = readout_heads.point_tracking_loss(
          points, batch['target_points'], batch['occluded'], point_queries[1],
          image_size=image_size, tracks_valid=batch['tracks_valid'], mask=mask)
      if self.uses_correlation_loss:
        parts['correlation'] = readout_heads.correlation_loss(
            einops.rearrange(outputs['correlation_logits'], 'b t n h w -> b n t h w'),
            batch['target_points'], batch['occluded'], point_queries[1],
            image_size=image_size, tracks_valid=batch['tracks_valid'], mask=mask)
        loss += c.correlation_weight * parts['correlation']
      total += c.points_weight * loss
      terms.update({f'points/{k}': v for k, v in parts.items()})
      terms['points/loss'] = loss
    if 'depth' in self.tasks:
      loss = readout_heads.depth_loss(outputs['log_depth'], gt_depth, mask=mask)
      total += c.depth_weight * loss
      terms['depth/loss'] = loss
    if 'boxes' in self.tasks:
      loss, parts = readout_heads.box_tracking_loss(
          outputs['boxes'], batch['boxes'], self._scored_boxes(batch), mask=mask,
          iou_weight=c.box_iou_weight)
      total += c.boxes_weight * loss
      terms.update({f'boxes/{k}': v for k, v in parts.items()})
      terms['boxes/loss'] = loss
    return total, terms

  @staticmethod
  def _scored_boxes(batch):
    """Box entries with a query: the track has a box on frame 0."""
    return batch['boxes_valid'] & batch['boxes_valid'][:, :1]

  def eval_fn(self, params, batch, rng):
    c = self.readout_config
    image_size = tuple(batch['video'].shape[2:4])
    num_frames = batch['video'].shape[1]
    mask = batch['_mask']
    point_queries = (readout_heads.normalise_query_points(batch['query_points'], image_size)
                     if 'points' in self.tasks else None)
    outputs = self.run(params, batch, rng, point_queries=point_queries,
                       slice_frames=c.eval_slice_frames)
    results = {}

    def add(prefix, sums, keep=None):
      results.update({f'{prefix}/{k}': v for k, v in sums.items()
                      if keep is None or k in keep})

    if 'points' in self.tasks:
      tap = dict(image_size=image_size, tracks_valid=batch['tracks_valid'], mask=mask)
      position = einops.rearrange(outputs['position'], 'b t n c -> b n t c')
      visible = einops.rearrange(outputs['visible'], 'b t n -> b n t')
      add('points_first', metrics_lib.tapvid_metrics(
          batch['query_points'], batch['target_points'], batch['occluded'],
          readout_heads.positions_to_pixels(position, image_size), ~visible,
          query_mode='first', **tap))
      if c.eval_trivial_baselines:
        static_xy, static_occluded = static_point_predictions(batch['query_points'],
                                                              num_frames)
        add('static_points_first', metrics_lib.tapvid_metrics(
            batch['query_points'], batch['target_points'], batch['occluded'], static_xy,
            static_occluded, query_mode='first', **tap), REPORTED_TAPVID)
      if c.eval_strided:
        results.update(self._strided_point_metrics(params, batch, rng, image_size))
    if 'depth' in self.tasks:
      pred = readout_heads.log_depth_to_depth(outputs['log_depth'])
      add('depth', metrics_lib.depth_metrics(pred, batch['depth'], mask=mask))
      if c.eval_trivial_baselines:
        add('constant_depth', metrics_lib.depth_metrics(
            constant_depth_predictions(batch['depth']), batch['depth'], mask=mask),
            ('abs_rel', 'delta_1.25'))
    if 'boxes' in self.tasks:
      scored = self._scored_boxes(batch)
      add('boxes', metrics_lib.box_tracking_metrics(outputs['boxes'], batch['boxes'],
                                                    scored, mask=mask))
      if c.eval_trivial_baselines:
        add('static_boxes', metrics_lib.box_tracking_metrics(
            static_box_predictions(batch['boxes'][:, 0], num_frames), batch['boxes'],
            scored, mask=mask))
    return results

  def _strided_point_metrics(self, params, batch, rng, image_size):
    """TAP-Vid strided mode: forward from each query frame, backward (reversed video) before it."""
    c = self.readout_config
    num_frames = batch['video'].shape[1]
    strided = strided_queries(batch)
    query_xy, query_frame = readout_heads.normalise_query_points(strided['query_points'],
                                                           image_size)
    forward = self.run(params, batch, rng, point_queries=(query_xy, query_frame),
                       heads=('points',), slice_frames=c.eval_slice_frames)
    backward = self.run(params, batch, rng,
                        point_queries=(query_xy, num_frames - 1 - query_frame),
                        heads=('points',), slice_frames=c.eval_slice_frames, reverse=True)
    before_query = jnp.arange(num_frames)[None, :, None] < query_frame[:, None, :]  # [B, T, M]
    position = jnp.where(before_query[..., None], backward['position'], forward['position'])
    visible = jnp.where(before_query, backward['visible'], forward['visible'])
    position = einops.rearrange(position, 'b t n c -> b n t c')
    visible = einops.rearrange(visible, 'b t n -> b n t')
    tap = dict(image_size=image_size, tracks_valid=strided['tracks_valid'], mask=batch['_mask'],
               query_mode='strided')
    results = {f'points_strided/{k}': v for k, v in metrics_lib.tapvid_metrics(
        strided['query_points'], strided['target_points'], strided['occluded'],
        readout_heads.positions_to_pixels(position, image_size), ~visible, **tap).items()}
    if c.eval_trivial_baselines:
      static_xy, static_occluded = static_point_predictions(strided['query_points'], num_frames)
      static = metrics_lib.tapvid_metrics(strided['query_points'], strided['target_points'],
                                          strided['occluded'], static_xy, static_occluded, **tap)
      results.update({f'static_points_strided/{k}': static[k] for k in REPORTED_TAPVID})
    return results

  def summaries(self, params, batch, rng):
    """No image summaries: the readout metrics are the product."""
    del params, batch, rng
    return {}
