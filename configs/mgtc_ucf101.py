r"""VideoMAE ViT-B/16 on UCF101 split 1 with MGTC (VideoMAE's UCF101 recipe).

The recipe's values: docs/mgtc_reference.md §4.

Prepare the data once (TFDS's `ucf101` builder; needs the ffmpeg binary; downloads ~6.5 GB;
docs/data.md "UCF101"):
  tfds build ucf101 --config=ucf101_1 --data_dir=TFDS_DIR --file_format=array_record

Run:
  python -m mgtc.main --config=configs/mgtc_ucf101.py:stage=pretrain --workdir=PRETRAIN_WORKDIR \
      --config.data.data_dir=TFDS_DIR
  python -m mgtc.main --config=configs/mgtc_ucf101.py:method=mgtc,ratio=0.25 \
      --workdir=DIR --config.init_from=PRETRAIN_WORKDIR --config.data.data_dir=TFDS_DIR

Without the prepared dataset under `data_dir` the run stops before compiling with a
FileNotFoundError naming the path and the commands above.

The arg is `key=value` pairs separated by commas (all optional):
  stage    'finetune' (default) | 'pretrain' (VideoMAE on UCF101 only, tube mask 75%);
  frames   16 (default; stride 4) | 32 (stride 2: the same ~64-frame span at 2x the rate);
  method   token rule of `masking.METHODS` (default 'none');
  ratio    drop ratio (default 0.25);
  apply_at 'both' (default) | 'train' | 'test'.

Fine-tuning values from VideoMAE's UCF101 recipe (docs/mgtc_reference.md §4): AdamW (0.9, 0.999),
weight decay 0.05 (on every parameter: docs/mgtc_reference.md does not list VideoMAE's bias / norm
exclusion), layer-wise lr decay 0.7, lr 5e-4 at batch 128, 100 epochs with 5 warmup,
cosine to 1e-5, drop path 0.2, fc dropout 0.5, label smoothing 0.1.
Not implemented here (each costs VideoMAE accuracy, so do not expect its 91.3 top-1):
RandAugment, mixup / cutmix, random erasing, repeated augmentation, flips, scale jitter,
bicubic resizing, and VideoMAE's 5 clips x 3 crops test views.

Clips (`videolib/data/ucf101.py`): `frames` frames at the stride above; training starts at
a uniformly random frame, evaluation takes the one clip centred in the video
(`eval_clips = 1`); videos shorter than the span repeat their last frame (as VideoMAE's
loader). Frames: the short-side square, randomly placed in training and centred in
evaluation, resized to 224 (= short-side resize to 224 + 224 crop).
"""

import ml_collections

from configs import mgtc_tiny
from mgtc import masking
from mgtc import vit
from videolib import optim
from videolib import sharding
from videolib.data import pipeline

_TRAIN_CLIPS = 9537  # Split 1.
_BATCH_SIZE = 128
_STRIDES = {16: 4, 32: 2}  # Same time span: 16 x 4 = 32 x 2 = 64 source frames.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  values = mgtc_tiny.parse_arg(arg, dict(mgtc_tiny.DEFAULT_ARGS, frames="16"))
  frames = int(values["frames"])
  if frames not in _STRIDES:
    raise ValueError(f"Config arg frames={frames}: choose from {sorted(_STRIDES)}.")
  pretrain = values["stage"] == "pretrain"
  steps_per_epoch = _TRAIN_CLIPS // _BATCH_SIZE

  config = ml_collections.ConfigDict()
  config.stage = values["stage"]
  config.seed = 0
  config.batch_size = _BATCH_SIZE
  config.eval_batch_size = 64
  config.num_train_steps = (3200 if pretrain else 100) * steps_per_epoch
  config.log_every_steps = 50
  config.eval_every_steps = 10 * steps_per_epoch
  config.checkpoint_every_steps = 2 * steps_per_epoch
  config.checkpoint_max_to_keep = 3
  config.checkpoint_async = True  # Train on while saving; a kill may lose one save more.
  config.init_from = ""
  config.init_from_prefixes = ("patch_embed", "encoder")
  config.nan_policy = "stop"
  config.num_summary_videos = 4
  config.label_smoothing = 0.1
  config.eval_clips = 1  # One centred clip per video (VideoMAE: 5 clips x 3 crops).
  config.normalize_targets = True

  config.data = pipeline.default_data_config()
  config.data.name = "ucf101/ucf101_1"
  config.data.eval_split = "test"
  # Exactly the model's clip: a random window in training, the centred one in eval.
  config.data.num_frames = frames
  config.data.frame_stride = _STRIDES[frames]
  config.data.resolution = 224
  config.data.random_crop = True
  config.data.features = ("video",) if pretrain else ("video", "label")

  config.model = vit.vit_b_config()
  config.model.num_frames = frames
  config.model.num_classes = 101
  config.model.drop_path_rate = 0.0 if pretrain else 0.2
  config.model.fc_drop_rate = 0.5
  config.model.mask_ratio = 0.75
  config.model.dtype = "bfloat16"

  config.selection = masking.token_drop_config()
  config.selection.method = values["method"]
  config.selection.drop_ratio = float(values["ratio"])
  config.selection.apply_at = values["apply_at"]

  config.optimizer = optim.default_optimizer_config()
  config.optimizer.weight_decay = 0.05
  # VideoMAE decays neither biases, norm parameters nor position embeddings / tokens.
  config.optimizer.weight_decay_mask = "matrices"
  if pretrain:
    # VideoMAE's pretraining script (not in docs/mgtc_reference.md): base lr 1.5e-4 per 256 clips,
    # betas (0.9, 0.95), 40 warmup epochs.
    config.optimizer.peak_lr = 1.5e-4 * _BATCH_SIZE / 256
    config.optimizer.b2 = 0.95
    config.optimizer.warmup_steps = 40 * steps_per_epoch
  else:
    config.optimizer.peak_lr = 5e-4
    config.optimizer.b2 = 0.999
    config.optimizer.end_lr = 1e-5
    config.optimizer.warmup_steps = 5 * steps_per_epoch
    config.optimizer.clip_norm = 1e9  # VideoMAE fine-tuning does not clip (clip_grad=None).
    config.optimizer.layer_decay = 0.7  # docs/mgtc_reference.md §4, UCF101 column (K400: 0.75).

  config.mesh = sharding.default_mesh_config()
  return config
