"""MGTC's contribution to the shared trainer: VideoMAE pretraining and classification.

`config.stage` picks the task (`make_task`):
  * 'pretrain' (`PretrainTask`): VideoMAE masked autoencoding. Tube masking at
    `config.model.mask_ratio`, per-tubelet normalised pixel targets
    (`config.normalize_targets`), MSE on the masked tubelets only.
  * 'finetune' (`ClassificationTask`): the kept-token ViT classifier. `config.selection`
    (`masking.token_drop_config()`) names the token-dropping rule (MGTC or a baseline) and
    where it applies (`apply_at` train / test / both); cross-entropy with optional label
    smoothing. `config.init_from` + `config.init_from_prefixes=('patch_embed', 'encoder')`
    start from a pretraining run's backbone.

Evaluation (classification) reports, over the eval split (padding excluded by `_mask`):
  * `top_1`, `top_5`: multi-view accuracy. Video folders ('videos/...') give VideoMAE's
    protocol: `config.data.eval_views` = (clips, crops) views per video, clips evenly
    spaced over the whole video, short-side squares along the long side (the pipeline
    cuts them). Other datasets: the clip of `config.model.num_frames` frames is cut
    `config.eval_clips` times, evenly spaced, from the loaded window of
    `config.data.num_frames`, and the frame is resized whole. Each view gets its own token
    selection (views are stacked into the batch, and every rule selects per row); softmax
    scores are averaged over views before the argmax (docs/evaluation_reference.md §4).
  * `loss`: cross-entropy of the view-averaged probabilities (no smoothing);
  * `gflops_per_view` / `gflops_per_video`: the analytic count (`flops.py` convention,
    fvcore GMACs) of the eval forward at the number of tokens the rule keeps at test time,
    plus the motion-score cost for pixel MGTC. A constant, logged with every eval so each
    accuracy in `metrics.jsonl` sits next to the compute that produced it.

Training takes a random window of `config.model.num_frames` frames (one start per clip)
when the loaded window is longer.

Data: 'synthetic_movi/...' (8 motion classes), 'ucf101/ucf101_<n>' (TFDS UCF101, 101
classes; `videolib/data/ucf101.py` raises FileNotFoundError with the preparation commands
when the dataset is absent, before anything is compiled) or a folder of video files with
the official split lists ('videos/ucf101_<n>', 'videos/hmdb51_<n>', 'videos/kinetics400';
`videolib/data/video_folder.py`). Fine-tuning supports
`config.optimizer.layer_decay` through `ClassificationTask.layer_ids` (VideoMAE's layer
ids: patch embedding 0, block i -> i + 1, fc_norm and head depth + 1).

Config errors (drop ratio outside [0, 1), frames or frame size not divisible by the
tubelet, a budget that reaches into the first slice, a ratio the rule does not support,
data and model disagreeing) raise `ValueError` naming the field in `validate_config`, which
the trainer calls before anything is compiled.
"""
import functools
from typing import Any

import einops
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from mgtc import flops
from mgtc import masking
from mgtc import selection
from mgtc import vit
from videolib import metrics
from videolib import optim
from videolib import task as task_lib
from videolib.data import pipeline

STAGES = ("pretrain", "finetune")
# Methods scored on raw pixels: their scoring cost is part of the compute per view.
_PIXEL_SCORED_METHODS = ("mgtc", "mgtc_threshold")


def make_task(config: ml_collections.ConfigDict) -> "PretrainTask | ClassificationTask":
  """The task that `config.stage` names."""
  if config.stage not in STAGES:
    raise ValueError(f"config.stage={config.stage!r} is not one of {STAGES}.")
  return PretrainTask(config) if config.stage == "pretrain" else ClassificationTask(config)


# ----------------------------------------------------------------------------------------
# Config validation shared by both tasks.
# ----------------------------------------------------------------------------------------


def _validate_data_and_model(config: ml_collections.ConfigDict) -> selection.TokenGrid:
  """Checks that the clip the model sees is well-formed; returns its token grid."""
  data, model = config.data, config.model
  vit.check_motion_input(model.get("motion_input", "none"))
  vit.check_input_standardisation(model.get("input_standardisation", "none"))
  if "video" not in data.features:
    raise ValueError(f"config.data.features={tuple(data.features)} must include 'video'.")
  if np.ndim(data.resolution) != 0 or data.resolution != model.image_size:
    raise ValueError(
        f"config.data.resolution={data.resolution} must equal config.model.image_size="
        f"{model.image_size} (square frames; the FLOP count uses image_size)."
    )
  if model.num_frames % model.tubelet_size:
    raise ValueError(
        f"config.model.num_frames={model.num_frames} is not divisible by "
        f"config.model.tubelet_size={model.tubelet_size}."
    )
  if model.image_size % model.patch_size:
    raise ValueError(
        f"config.model.image_size={model.image_size} is not divisible by "
        f"config.model.patch_size={model.patch_size}."
    )
  if data.num_frames < model.num_frames:
    raise ValueError(
        f"config.data.num_frames={data.num_frames} is shorter than the model's clip, "
        f"config.model.num_frames={model.num_frames}."
    )
  return selection.token_grid(
      (model.num_frames, model.image_size, model.image_size, model.channels),
      model.patch_size, model.tubelet_size)


def _video_spec(model_config: ml_collections.ConfigDict, batch_size: int = 1):
  return jax.ShapeDtypeStruct(
      (batch_size, model_config.num_frames, model_config.image_size,
       model_config.image_size, model_config.channels), jnp.float32)


def _kept_token_count(config: ml_collections.ConfigDict, *, train: bool) -> int:
  """Tokens the encoder sees per view (traced from shapes; raises the rule's errors)."""
  model = config.model
  video = _video_spec(model)
  grid = selection.token_grid(video.shape, model.patch_size, model.tubelet_size)

  def select(video):
    kept = masking.kept_token_indices(
        config.selection, video, patch_size=model.patch_size,
        tubelet_size=model.tubelet_size, train=train, rng=jax.random.key(0),
        patch_embeddings=jnp.zeros((video.shape[0], grid.num_tokens, model.width)))
    return None if kept is None else kept.indices

  indices = jax.eval_shape(select, video)
  return grid.num_tokens if indices is None else indices.shape[1]


def _validate_selection(config: ml_collections.ConfigDict, grid: selection.TokenGrid) -> None:
  """Every selection setting the rule would reject, as errors naming the field."""
  drop = config.selection
  if drop.method not in masking.METHODS:
    raise ValueError(f"config.selection.method={drop.method!r} is not one of "
                     f"{masking.METHODS}.")
  if drop.apply_at not in selection.APPLY_AT:
    raise ValueError(f"config.selection.apply_at={drop.apply_at!r} is not one of "
                     f"{selection.APPLY_AT}.")
  if not 0.0 <= drop.drop_ratio < 1.0:
    raise ValueError(f"config.selection.drop_ratio={drop.drop_ratio} is outside [0, 1).")
  if drop.method == "mgtc":
    try:
      selection.num_tokens_to_drop(grid.num_tokens, drop.drop_ratio, grid.tokens_per_slice)
    except ValueError as error:
      raise ValueError(
          f"config.selection.drop_ratio={drop.drop_ratio} with method='mgtc' on a "
          f"{grid.slices} x {grid.height} x {grid.width} token grid (config.model."
          f"num_frames={config.model.num_frames}): {error} The first slice is never "
          "dropped."
      ) from error
  for train in (True, False):
    try:
      _kept_token_count(config, train=train)
    except ValueError as error:
      raise ValueError(
          f"config.selection (method={drop.method!r}, drop_ratio={drop.drop_ratio}, "
          f"apply_at={drop.apply_at!r}) cannot run on the {grid.slices} x {grid.height} "
          f"x {grid.width} token grid: {error}"
      ) from error


def gflops_per_view(config: ml_collections.ConfigDict) -> float:
  """Analytic GFLOPs (GMACs, fvcore convention) of one evaluation view.

  The encoder cost at the token count the configured rule keeps at test time, the
  classifier head, the pixel motion score for MGTC, and the embedding of all tokens for
  the embedding-space rule (it scores every token before choosing).
  """
  model, drop = config.model, config.selection
  kept = _kept_token_count(config, train=False)
  gmacs = flops.analytic_gmacs(
      kept, width=model.width, depth=model.depth, patch_size=model.patch_size,
      tubelet_size=model.tubelet_size, channels=model.channels,
      mlp_ratio=model.mlp_ratio, num_classes=model.num_classes)
  grid = selection.token_grid(_video_spec(model).shape, model.patch_size,
                              model.tubelet_size)
  dropping = drop.method != "none" and selection.is_selection_active(drop.apply_at, False)
  if dropping and drop.method in _PIXEL_SCORED_METHODS:
    gmacs += flops.scoring_gmacs(model.num_frames, model.image_size, model.channels,
                                 model.tubelet_size, drop.score_rule)
  if dropping and drop.method == "embedding":
    embed_all = grid.num_tokens * model.tubelet_size * model.patch_size**2
    gmacs += embed_all * model.channels * model.width / 1e9
  return gmacs


# ----------------------------------------------------------------------------------------
# Temporal views.
# ----------------------------------------------------------------------------------------


def random_temporal_window(rng: jax.Array, video: jax.Array, num_frames: int) -> jax.Array:
  """A random window of `num_frames` per clip: [B, T, ...] -> [B, num_frames, ...]."""
  batch_size, total = video.shape[:2]
  if total == num_frames:
    return video
  starts = jax.random.randint(rng, (batch_size,), 0, total - num_frames + 1)
  return jax.vmap(
      lambda clip, start: jax.lax.dynamic_slice_in_dim(clip, start, num_frames)
  )(video, starts)


def temporal_views(video: jax.Array, num_frames: int, num_clips: int) -> jax.Array:
  """`num_clips` evenly spaced windows: [B, T, ...] -> [B, V, num_frames, ...]."""
  total = video.shape[1]
  starts = np.linspace(0, total - num_frames, num_clips).round().astype(int)
  return jnp.stack([video[:, s:s + num_frames] for s in starts], axis=1)


def _to_uint8(video: jax.Array) -> jax.Array:
  return jnp.round(jnp.clip(video, 0.0, 1.0) * 255).astype(jnp.uint8)


def _token_map_to_pixels(
    values: jax.Array, grid: selection.TokenGrid, patch_size: int, tubelet_size: int
) -> jax.Array:
  """Per-token values [B, N] -> per-pixel [B, T, H, W, 1] (each tubelet filled)."""
  values = einops.rearrange(values, "b (t h w) -> b t h w", t=grid.slices, h=grid.height)
  values = jnp.repeat(values, tubelet_size, axis=1)
  values = jnp.repeat(jnp.repeat(values, patch_size, axis=2), patch_size, axis=3)
  return values[..., None]


# ----------------------------------------------------------------------------------------
# Pretraining.
# ----------------------------------------------------------------------------------------


class _VideoMAETask(task_lib.Task):
  """What both stages share: the config, the tubelet grid and `config.init_from_prefixes`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.patch_size = config.model.patch_size
    self.tubelet_size = config.model.tubelet_size

  def init_from_prefixes(self, config: ml_collections.ConfigDict) -> tuple[str, ...]:
    return tuple(config.init_from_prefixes)


class PretrainTask(_VideoMAETask):
  """VideoMAE masked autoencoding with tube masking (see `vit.VideoMAEPretrainer`)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.model = vit.build_pretrainer(config.model)

  def validate_config(self, config: ml_collections.ConfigDict) -> None:
    grid = _validate_data_and_model(config)
    ratio = config.model.mask_ratio
    if not 0.0 <= ratio < 1.0:
      raise ValueError(f"config.model.mask_ratio={ratio} is outside [0, 1).")
    if selection.num_tokens_to_drop(grid.tokens_per_slice, ratio) == 0:
      raise ValueError(
          f"config.model.mask_ratio={ratio} masks no tubelet of a {grid.height} x "
          f"{grid.width} slice: there would be nothing to reconstruct."
      )

  def _grid(self, video: jax.Array) -> selection.TokenGrid:
    return selection.token_grid(video.shape, self.patch_size, self.tubelet_size)

  def _reconstruct(self, params, video, mask_rng, dropout_rng, *, train: bool):
    """Returns predictions [B, M, F] of the masked tubelets and their indices [B, M]."""
    visible, masked = masking.tube_visible_and_masked(
        mask_rng, video.shape[0], self._grid(video), self.config.model.mask_ratio)
    predictions = self.model.apply({"params": params}, video, visible, masked, train=train,
                                   rngs={"dropout": dropout_rng})
    return predictions, masked

  def _targets(self, video: jax.Array) -> jax.Array:
    return vit.reconstruction_targets(video, self.patch_size, self.tubelet_size,
                                      normalize=self.config.normalize_targets)

  def init(self, rng: jax.Array, batch: dict) -> Any:
    params_rng, mask_rng = jax.random.split(rng)
    video = jnp.zeros(_video_spec(self.config.model, batch["video"].shape[0]).shape)
    visible, masked = masking.tube_visible_and_masked(
        mask_rng, video.shape[0], self._grid(video), self.config.model.mask_ratio)
    return self.model.init(params_rng, video, visible, masked, train=False)["params"]

  def loss_fn(self, params, batch, rng):
    window_rng, mask_rng, dropout_rng = jax.random.split(rng, 3)
    video = random_temporal_window(window_rng, batch["video"], self.config.model.num_frames)
    predictions, masked = self._reconstruct(params, video, mask_rng, dropout_rng,
                                            train=True)
    loss = vit.masked_reconstruction_loss(predictions, self._targets(video), masked)
    return loss, {}

  def eval_fn(self, params, batch, rng):
    video = batch["video"][:, : self.config.model.num_frames]
    predictions, masked = self._reconstruct(params, video, rng, rng, train=False)
    targets = selection.gather_tokens(self._targets(video), masked)
    per_example = jnp.mean(jnp.square(predictions - targets), axis=(1, 2))
    return {"loss": metrics.example_masked_sum(per_example, batch["_mask"])}

  def summaries(self, params, batch, rng):
    """Per example: the clip, what the encoder saw, and the reconstruction.

    Predicted tubelets are de-normalised with the true tubelet mean and standard
    deviation (the VideoMAE visualisation), so the strip shows structure, not colour.
    """
    video = batch["video"][: self.config.get("num_summary_videos", 4),
                           : self.config.model.num_frames]
    predictions, masked = self._reconstruct(params, video, rng, rng, train=False)
    tubelets = einops.rearrange(
        vit.patchify(video, self.patch_size, self.tubelet_size), "b n (k c) -> b n k c",
        c=video.shape[-1])
    if self.config.normalize_targets:
      mean = jnp.mean(tubelets, axis=2, keepdims=True)
      std = jnp.sqrt(jnp.var(tubelets, axis=2, keepdims=True, ddof=1) + 1e-6)
      predictions = einops.rearrange(predictions, "b m (k c) -> b m k c",
                                     c=video.shape[-1])
      predictions = (predictions * selection.gather_tokens(std, masked)
                     + selection.gather_tokens(mean, masked))
      predictions = einops.rearrange(predictions, "b m k c -> b m (k c)")
    patches = vit.patchify(video, self.patch_size, self.tubelet_size)
    rows = jnp.arange(video.shape[0])[:, None]
    reconstruction = patches.at[rows, masked].set(predictions)
    seen = patches.at[rows, masked].set(0.0)
    grid = self._grid(video)

    def unpatchify(tokens):
      return einops.rearrange(
          tokens, "b (t h w) (s p q c) -> b (t s) (h p) (w q) c", t=grid.slices,
          h=grid.height, s=self.tubelet_size, p=self.patch_size, q=self.patch_size)

    strip = jnp.concatenate([video, unpatchify(seen), unpatchify(reconstruction)], axis=-3)
    return {"mae_reconstruction": _to_uint8(strip)}


# ----------------------------------------------------------------------------------------
# Classification fine-tuning with token selection.
# ----------------------------------------------------------------------------------------


class ClassificationTask(_VideoMAETask):
  """Kept-token ViT classifier; `config.selection` picks the tokens (MGTC or baseline)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.model = vit.build_classifier(config.model)
    self._gflops = None

  @property
  def gflops_per_view(self) -> float:
    """Analytic GFLOPs of one eval view (computed once; needs a valid config)."""
    if self._gflops is None:
      self._gflops = gflops_per_view(self.config)
    return self._gflops

  def validate_config(self, config: ml_collections.ConfigDict) -> None:
    grid = _validate_data_and_model(config)
    if "label" not in config.data.features:
      raise ValueError(
          f"config.data.features={tuple(config.data.features)} must include 'label'.")
    expected = pipeline.num_classes(config.data)
    if expected is not None and config.model.num_classes != expected:
      raise ValueError(
          f"config.model.num_classes={config.model.num_classes}, but {config.data.name} "
          f"has {expected} classes."
      )
    if not 0.0 <= config.label_smoothing < 1.0:
      raise ValueError(f"config.label_smoothing={config.label_smoothing} is outside [0, 1).")
    if config.eval_clips < 1:
      raise ValueError(f"config.eval_clips={config.eval_clips} must be >= 1.")
    if tuple(config.data.eval_views) != (1, 1) and (
        config.eval_clips != 1 or config.data.num_frames != config.model.num_frames):
      raise ValueError(
          f"config.data.eval_views={tuple(config.data.eval_views)}: the pipeline cuts the "
          "views, so config.eval_clips must be 1 and config.data.num_frames must equal "
          f"config.model.num_frames (got {config.eval_clips}, {config.data.num_frames}, "
          f"{config.model.num_frames}).")
    _validate_selection(config, grid)
    logging.info(
        "MGTC eval compute: %.4f GFLOPs per view x %d views (selection %s at %.2f, "
        "apply_at=%s; %d of %d tokens kept at test time).",
        self.gflops_per_view, config.eval_clips * int(np.prod(config.data.eval_views)),
        config.selection.method,
        config.selection.drop_ratio, config.selection.apply_at,
        _kept_token_count(config, train=False), grid.num_tokens)

  def layer_ids(self) -> optim.LayerIds:
    """Parameter -> layer map for `config.optimizer.layer_decay` (`vit.classifier_layer_id`)."""
    depth = self.config.model.depth
    return optim.LayerIds(num_layers=depth,
                          layer_id=functools.partial(vit.classifier_layer_id, depth=depth))

  def _kept(self, params, video, *, train: bool, rng: jax.Array | None):
    """The rule's kept tokens for `video`, or None for all of them."""
    patch_embeddings = None
    if self.config.selection.method == "embedding":
      patch_embeddings = self.model.apply({"params": params}, video,
                                          method=self.model.embed_patches)
    return masking.kept_token_indices(
        self.config.selection, video, patch_size=self.patch_size,
        tubelet_size=self.tubelet_size, train=train, rng=rng,
        patch_embeddings=patch_embeddings)

  def logits(self, params, video, *, train: bool, rng: jax.Array | None = None):
    """Class logits [B, C] of clips [B, T, H, W, C] with the configured selection."""
    select_rng, dropout_rng = (None, None) if rng is None else jax.random.split(rng)
    kept = self._kept(params, video, train=train, rng=select_rng)
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
    return self.model.apply({"params": params}, video, kept, train=train, rngs=rngs)

  def init(self, rng: jax.Array, batch: dict) -> Any:
    video = jnp.zeros(_video_spec(self.config.model, batch["video"].shape[0]).shape)
    return self.model.init(rng, video, train=False)["params"]

  def loss_fn(self, params, batch, rng):
    window_rng, model_rng = jax.random.split(rng)
    video = random_temporal_window(window_rng, batch["video"], self.config.model.num_frames)
    logits = self.logits(params, video, train=True, rng=model_rng)
    targets = optax.smooth_labels(
        jax.nn.one_hot(batch["label"], self.config.model.num_classes),
        self.config.label_smoothing)
    loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == batch["label"])
    return loss, {"accuracy": accuracy}

  def eval_fn(self, params, batch, rng):
    del rng  # The random rules use config.selection.test_seed at test time.
    if "video_views" in batch:  # Cut by the pipeline (`config.data.eval_views`).
      views = batch["video_views"]
    else:
      views = temporal_views(batch["video"], self.config.model.num_frames,
                             self.config.eval_clips)
    num_views = views.shape[1]
    logits = self.logits(params, einops.rearrange(views, "b v ... -> (b v) ..."),
                         train=False)
    logits = einops.rearrange(logits, "(b v) c -> b v c", v=num_views)
    probabilities = metrics.average_view_probabilities(logits)
    mask = batch["_mask"]
    labels = batch["label"]
    nll = -jnp.log(jnp.maximum(
        jnp.take_along_axis(probabilities, labels[:, None], axis=-1)[:, 0], 1e-12))
    gflops = jnp.full(labels.shape, self.gflops_per_view, jnp.float32)
    return dict(
        metrics.classification_metrics(probabilities, labels, mask=mask),
        loss=metrics.example_masked_sum(nll, mask),
        gflops_per_view=metrics.example_masked_sum(gflops, mask),
        gflops_per_video=metrics.example_masked_sum(gflops * num_views, mask),
    )

  def summaries(self, params, batch, rng):
    """The first eval view with the dropped tokens dimmed to a quarter brightness."""
    del rng
    video = batch["video"][: self.config.get("num_summary_videos", 4),
                           : self.config.model.num_frames]
    grid = selection.token_grid(video.shape, self.patch_size, self.tubelet_size)
    kept = self._kept(params, video, train=False, rng=None)
    if kept is None:
      return {"kept_tokens": _to_uint8(video)}
    keep_map = jnp.zeros((video.shape[0], grid.num_tokens))
    rows = jnp.arange(video.shape[0])[:, None]
    weights = jnp.ones(kept.indices.shape) if kept.valid is None else kept.valid
    keep_map = keep_map.at[rows, kept.indices].max(weights.astype(jnp.float32))
    pixels = _token_map_to_pixels(keep_map, grid, self.patch_size, self.tubelet_size)
    return {"kept_tokens": _to_uint8(video * (0.25 + 0.75 * pixels))}
