r"""Tiny ViT on the synthetic motion-class data: VideoMAE pretraining and MGTC fine-tuning.

Run (2 CPU cores):
  python -m mgtc.main --config=configs/mgtc_tiny.py:stage=pretrain --workdir=/tmp/mgtc_pre
  python -m mgtc.main --config=configs/mgtc_tiny.py:frames=16,method=mgtc,ratio=0.5 \
      --workdir=/tmp/mgtc_ft --config.init_from=/tmp/mgtc_pre

The arg is `key=value` pairs separated by commas (all optional):
  stage    'finetune' (default) | 'pretrain';
  frames   8 (default; 'synthetic_movi/32x32_8f_...') | 16 (the same time span at 2x the
           frame rate, 'synthetic_movi/32x32_16f_2x_...');
  method   token rule of `masking.METHODS` (default 'none' = all tokens);
  ratio    drop ratio r in [0, 1) (default 0.25);
  apply_at 'both' (default) | 'train' | 'test'.

Model: ViT 4 blocks x 128 wide, 4 heads, patch 8, tubelet 2 on 32 x 32 frames, so 4 x 4
tokens per slice: 64 tokens at 8 frames, 128 at 16. Data: 2,000 training and 1,000
validation videos, 8 motion classes (docs/data.md). Fine-tuning starts from a pretraining
run's `patch_embed` and `encoder` when `config.init_from` is set.

Departures from VideoMAE for this tiny CPU setting (issue 5):
  * `model.motion_input='difference'`, scale 10: the encoder sees 10 x (frame t - frame
    t - 1), not raw pixels. On raw pixels this ViT stays at chance: train loss flat at
    ln 8 for 1,500 steps (22 epochs; 11.2% val). The class is only in the ~1 px/frame
    motion of one object, a second-order signal far below appearance and the fixed
    position table; a linear probe on the random-init pooled features is at chance
    (11.4% val) while 21 hand-made frame-difference statistics give 31%. Raising lr to
    3e-3, head init x1000, ImageNet-normalised or x10 input, or patch 4 left it flat at
    300 steps; 10 x frame differences learn from the first 100 steps.
  * `data.random_crop=True`: the only augmentation against overfitting the 2,000 clips.

Measured (one CPU core, `taskset -c 1`; the other core ran other jobs): the defaults
(frames=8, all tokens, from scratch, 1,800 steps) reach 40.5% val top-1 (36.2% at step
900) in 6 min 42 s wall, compile and both 1,000-clip evals included:
  python -m mgtc.main --config=configs/mgtc_tiny.py --workdir=/tmp/mgtc_a8 \
      --config.data.data_dir=/tmp/mgtc_exp/tfds
0.058 / 0.124 GFLOPs per view at 8 / 16 frames. At 16 frames (2x rate): all tokens 44.5%,
MGTC at 25% / 50% dropped 47.2% / 48.2%; the full table: docs/mgtc_results.md.
"""

import ml_collections

from mgtc import masking
from mgtc import vit
from videolib import optim
from videolib import sharding
from videolib.data import pipeline
from videolib.data import synthetic

_DATASETS = {
    8: synthetic.config_name(32, 8, num_train=2000, num_validation=1000),
    16: synthetic.config_name(32, 16, frame_rate=2, num_train=2000, num_validation=1000),
}
DEFAULT_ARGS = dict(stage="finetune", frames="8", method="none", ratio="0.25",
                    apply_at="both")


def parse_arg(arg: str | None, defaults: dict[str, str] | None = None) -> dict[str, str]:
  """'stage=pretrain,frames=16' -> `defaults` (DEFAULT_ARGS) updated with those values."""
  values = dict(DEFAULT_ARGS if defaults is None else defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in values:
      raise ValueError(f"Config arg {item!r}: expected key=value with key in "
                       f"{sorted(values)}.")
    values[key] = value
  return values


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  values = parse_arg(arg)
  frames = int(values["frames"])
  if frames not in _DATASETS:
    raise ValueError(f"Config arg frames={frames}: choose from {sorted(_DATASETS)}.")
  pretrain = values["stage"] == "pretrain"

  config = ml_collections.ConfigDict()
  config.stage = values["stage"]
  config.seed = 0
  config.num_train_steps = 1500 if pretrain else 1800
  config.batch_size = 32
  config.eval_batch_size = 200
  config.log_every_steps = 50
  config.eval_every_steps = 900
  config.checkpoint_every_steps = 500
  config.checkpoint_max_to_keep = 1
  config.checkpoint_async = False  # Blocking saves: a kill loses at most one interval.
  config.init_from = ""
  # Fine-tuning loads only the backbone of a pretraining run; the head starts fresh.
  config.init_from_prefixes = ("patch_embed", "encoder")
  config.nan_policy = "stop"
  config.num_summary_videos = 4
  config.label_smoothing = 0.1
  config.eval_clips = 1  # The clip is the whole video; there is nothing to slide over.
  config.normalize_targets = True  # Pretraining: VideoMAE's per-tubelet norm_pix target.

  config.data = pipeline.default_data_config()
  config.data.name = "synthetic_movi/" + _DATASETS[frames]
  config.data.num_frames = frames
  config.data.resolution = 32
  # Distorted crop (area 0.3-1): it can cut the main object partly out of view, but it
  # is the only augmentation, and without it the model overfits the 2,000 clips (1,200
  # steps: 72% train vs 33% val top-1 without, 37% val with; see the docstring).
  config.data.random_crop = True
  config.data.features = ("video",) if pretrain else ("video", "label")

  config.model = vit.vit_tiny_config()
  config.model.num_frames = frames
  config.model.num_classes = 8
  config.model.drop_path_rate = 0.0 if pretrain else 0.1
  config.model.mask_ratio = 0.75  # 12 of 16 tubelets per slice masked in pretraining.
  # The encoder sees 10 x the frame differences, not raw pixels (not VideoMAE; see the
  # docstring): on raw pixels this model stays at chance. Token rules still score pixels.
  config.model.motion_input = "difference"
  config.model.motion_input_scale = 10.0

  config.selection = masking.token_drop_config()
  config.selection.method = values["method"]
  config.selection.drop_ratio = float(values["ratio"])
  config.selection.apply_at = values["apply_at"]

  config.optimizer = optim.default_optimizer_config()
  config.optimizer.peak_lr = 1e-3
  config.optimizer.end_lr = 1e-6
  config.optimizer.warmup_steps = 100
  config.optimizer.b2 = 0.999
  config.optimizer.weight_decay = 0.05
  # VideoMAE decays neither biases, norm parameters nor position embeddings / tokens.
  config.optimizer.weight_decay_mask = "matrices"

  config.mesh = sharding.default_mesh_config()
  return config
