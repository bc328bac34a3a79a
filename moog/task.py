"""MooG's contribution to the shared trainer: init, loss, evaluation and summaries.

Evaluation reports, over the eval split (padding examples excluded by `_mask`):
- `loss`: the training objective at the eval lattice (factor `subsample_factor_eval`,
  offset 0);
- `psnr`: next-frame PSNR per image, averaged over every frame (frame 0 is predicted from
  the random initial state, so it drags this number down);
- `psnr_frames_1plus`, `psnr_repeat_previous_frame`, `psnr_mean_colour`: PSNR over
  frames 1..T-1 of the model's prediction and, on the same pixels, of two trivial
  predictors: "the next frame equals this frame", and each frame's own mean colour (the
  best a spatially constant prediction can do). A model above the second has left the
  mean-colour plateau; above the first it has learned something about motion.

`config.motion_guided` (optional, `moog/motion_guided.py`) hides the least-moving encoder
tokens of every frame t >= 1 from the corrector, in training, evaluation and summaries.
"""

import copy

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from moog import grid_baselines
from moog import model as moog_model
from moog import motion_guided
from moog import token_tracking
from videolib import metrics
from videolib import task as task_lib


NUM_DRAWN_TOKENS = 16  # Tokens whose attention tracks the eval summaries draw.


class MooGTask(task_lib.Task):
  """Next-frame prediction with MooG or an on-the-grid baseline (`config.backbone`).

  The backbone is `grid_baselines.build_backbone`'s: MooG (`moog/model.py`), Grid or
  Grid Rec. (`moog/grid_baselines.py`); the objective and evaluation are the same.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.motion_config = config.get("motion_guided", motion_guided.default_config())
    self.backbone = grid_baselines.backbone_kind(config)
    self.model = self._with_motion_guidance(
        grid_baselines.build_backbone(self.backbone, config.model))
    self.num_summary_videos = config.get("num_summary_videos", 4)

  def _with_motion_guidance(self, model: moog_model.MooG) -> moog_model.MooG:
    """`model`, or its gather-path version when `config.motion_guided.gather` is set."""
    if self.motion_config.gather:
      return motion_guided.gathered_from(model, self.motion_config.drop_ratio)
    return model

  def _motion_kwargs(self, video: jax.Array) -> dict:
    """The `encoder_token_mask` argument of `config.motion_guided` (none if off or gathered)."""
    if self.motion_config.gather:
      return {}
    mask = motion_guided.encoder_token_mask(video, self.model.encoder.total_stride,
                                            self.motion_config)
    return {} if mask is None else {"encoder_token_mask": mask}

  def for_cost_analysis(self, config: ml_collections.ConfigDict) -> "MooGTask":
    """This task with the time loop fully unrolled: same computation, exact XLA FLOPs."""
    unrolled = copy.copy(self)
    unrolled.model = self.model.clone(scan_unroll=config.data.num_frames)
    return unrolled

  def validate_config(self, config: ml_collections.ConfigDict) -> None:
    grid_baselines.validate_backbone_config(self.backbone, config.model,
                                            config.data.resolution)
    motion_guided.validate_config(self.motion_config, self.backbone)
    if "video" not in config.data.features:
      raise ValueError(f"config.data.features={config.data.features} must include 'video'.")
    if config.data.num_frames < 2:
      raise ValueError(
          f"config.data.num_frames={config.data.num_frames}: MooG needs at least 2 frames."
      )
    stride = int(np.prod(config.model.encoder_strides))
    for field in ("subsample_factor_train", "subsample_factor_eval"):
      factor = config.model[field]
      if config.data.resolution % factor:
        raise ValueError(
            f"config.data.resolution={config.data.resolution} is not divisible by "
            f"config.model.{field}={factor}."
        )
    if config.data.resolution % stride:
      raise ValueError(
          f"config.data.resolution={config.data.resolution} is not divisible by the encoder "
          f"stride {stride} (config.model.encoder_strides={tuple(config.model.encoder_strides)})."
      )

  def init(self, rng: jax.Array, batch: dict) -> dict:
    params_rng, default_rng = jax.random.split(rng)
    video = jnp.zeros(batch["video"].shape, batch["video"].dtype)
    variables = self.model.init({"params": params_rng, "default": default_rng}, video,
                                train=True)
    return variables["params"]

  def loss_fn(self, params, batch, rng):
    outputs = self.model.apply({"params": params}, batch["video"], train=True,
                               rngs={"default": rng}, **self._motion_kwargs(batch["video"]))
    loss = moog_model.l2_loss(outputs)
    return loss, {"psnr": moog_model.psnr(outputs["video_predicted"],
                                          outputs["subsampled_targets"])}

  def eval_fn(self, params, batch, rng):
    outputs = self.model.apply({"params": params}, batch["video"], train=False,
                               rngs={"default": rng}, **self._motion_kwargs(batch["video"]))
    predicted, targets = outputs["video_predicted"], outputs["subsampled_targets"]
    mask = batch["_mask"]
    squared_error = jnp.mean(jnp.square(predicted - targets), axis=(1, 2, 3, 4))
    psnr = moog_model.psnr_per_image(predicted, targets)
    # At eval the lattice phase is 0 for every frame, so targets[t - 1] sits on the same
    # pixels as targets[t]: the repeat-previous-frame prediction.
    repeat_psnr = moog_model.psnr_per_image(targets[:, :-1], targets[:, 1:])
    # The best any spatially constant prediction scores: the mean-colour plateau's bound.
    mean_colour_psnr = moog_model.psnr_per_image(
        moog_model.mean_colour_prediction(targets[:, 1:]), targets[:, 1:])
    return {
        "loss": metrics.example_masked_sum(squared_error, mask),
        "psnr": metrics.example_masked_sum(psnr, mask),
        "psnr_frames_1plus": metrics.example_masked_sum(psnr[:, 1:], mask),
        "psnr_repeat_previous_frame": metrics.example_masked_sum(repeat_psnr, mask),
        "psnr_mean_colour": metrics.example_masked_sum(mean_colour_psnr, mask),
    }

  def summaries(self, params, batch, rng):
    """For a few examples: real frames above full-resolution next-frame predictions, and
    the first `NUM_DRAWN_TOKENS` tokens' attention centroids (`render_summaries` draws
    them; the gather path has no full-grid attention, so it has no centroids)."""
    video = batch["video"][: self.num_summary_videos]
    height, width = video.shape[-3:-1]
    outputs, variables = self.model.apply(
        {"params": params}, video, train=False, rngs={"default": rng},
        mutable=["intermediates"], **self._motion_kwargs(video))
    predicted = self.model.apply({"params": params}, outputs["states_predicted"], height,
                                 width, method=self.model.decode_frame)
    strip = jnp.concatenate([video, jnp.clip(predicted, 0.0, 1.0)], axis=-3)
    summaries = {"next_frame_prediction": jnp.round(strip * 255).astype(jnp.uint8)}
    if not self.motion_config.gather:
      stride = self.model.encoder.total_stride
      maps = token_tracking.attention_maps(
          token_tracking.corrector_cross_attention(variables["intermediates"]),
          (height // stride, width // stride))
      centroids = token_tracking.attention_centroids(maps, (height, width))
      summaries["token_centroids"] = centroids[..., :NUM_DRAWN_TOKENS, :]
    return summaries

  def render_summaries(self, summaries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host side: draws the token centroid tracks over the real frames (top of the strip)."""
    summaries = dict(summaries)
    centroids = summaries.pop("token_centroids", None)
    if centroids is not None:
      strip = summaries["next_frame_prediction"]
      real_frames = strip[..., : strip.shape[-3] // 2, :, :]
      summaries["token_trajectories"] = token_tracking.trajectory_video(real_frames, centroids)
    return summaries
