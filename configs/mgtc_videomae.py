r"""MGTC's protocol on a released VideoMAE ViT-B/16: UCF101, HMDB51 and Kinetics-400 videos.

Weights: convert a released checkpoint once (README, "MGTC"; the command prints the model
fields the weights fix):
  python -m mgtc.videomae_weights --checkpoint=videomae-base/ --output=videomae_base.npz
Hugging Face copies use LayerNorm epsilon 1e-12: add --config.model.layer_norm_eps=1e-12.
Data: the video files and the official split lists below DATA_DIR (docs/data.md, "Video
files with the official split lists").

Fine-tune the self-supervised backbone with a token rule (the head starts fresh):
  python -m mgtc.main --config=configs/mgtc_videomae.py:dataset=ucf101,frames=32,method=mgtc,ratio=0.25 \
      --workdir=DIR --config.init_from=videomae_base.npz --config.data.data_dir=DATA_DIR
Inference-only MGTC on a fine-tuned classifier (no retraining; accuracy and GFLOPs per view
against the drop ratio, one evaluation per ratio):
  python -m mgtc.main --config=configs/mgtc_videomae.py:dataset=k400,init=finetuned,method=mgtc,ratio=0.5,apply_at=test \
      --mode=eval --workdir=DIR --config.init_from=videomae_base_k400.npz \
      --config.data.data_dir=DATA_DIR

The arg is `key=value` pairs separated by commas (all optional):
  dataset  'ucf101' (default) | 'hmdb51' | 'k400';
  split    1 (default) | 2 | 3 (UCF101, HMDB51);
  frames   16 (default; stride 4) | 32 (stride 2: the same 64-frame span at twice the rate);
  method   token rule of `masking.METHODS`: 'none' (default), 'mgtc', 'random', 'tube',
           'running_cell', 'embedding';
  ratio    drop ratio (default 0.25; the paper's rows are 0, 0.25, 0.5);
  apply_at 'both' (default) | 'train' | 'test';
  init     'pretrained' (default: load `patch_embed` and `encoder`, a fresh head) |
           'finetuned' (load the whole classifier, e.g. for --mode=eval).

What the runs should reproduce (docs/mgtc_reference.md §1, §4-§6; the paper's per-dataset
tables were not available):
  * higher frame rate, unmasked: frames=32 beats frames=16 by +1.6 top-1 on K400 and UCF101,
    +4.0 on HMDB51;
  * MGTC at 25 % on K400 (frames=32): +0.1 top-1 over frames=32 unmasked with 32.5 % fewer
    GFLOPs per view (451.3 -> 304.5; the analytic count is logged with every evaluation);
  * equal budget: frames=32 at 50 % costs what frames=16 unmasked costs (180.3 GFLOPs per
    view); MGTC should beat random, tube and running-cell rows at the same ratio;
  * VideoMAE ViT-B anchors (16 frames, 5 x 3 views): K400 81.5 (1,600-epoch pretraining);
    UCF101 about 96 and HMDB51 about 73 when fine-tuned from K400 pretraining.
Not implemented (each costs VideoMAE accuracy; expect lower absolute numbers, compare rows
with each other): RandAugment, mixup / cutmix, random erasing, repeated augmentation,
bicubic resizing. No row has been run here (CPU only; ViT-B takes 2.5 s per clip forward).

Recipes (VideoMAE's fine-tuning scripts, docs/mgtc_reference.md §4): AdamW (0.9, 0.999),
weight decay 0.05 off biases, norms and tokens, cosine schedule with 5 warmup epochs, label
smoothing 0.1, random resized crops and flips, 5 clips x 3 crops at test. K400: layer decay
0.75, lr 5e-4 at batch 384, 75 epochs, end lr 1e-6, drop path 0.1. UCF101 and HMDB51: layer
decay 0.7, lr 5e-4 at batch 128, 100 epochs, end lr 1e-5, drop path 0.2, fc dropout 0.5.
"""

import ml_collections

from configs import mgtc_tiny
from mgtc import masking
from mgtc import vit
from videolib import optim
from videolib import sharding
from videolib.data import pipeline

_STRIDES = {16: 4, 32: 2}  # Same time span: 16 x 4 = 32 x 2 = 64 source frames.


def _recipe(dataset: str) -> dict:
  """Per-dataset values of VideoMAE's fine-tuning scripts; train clips set the epoch."""
  if dataset == "k400":
    return dict(train_clips=240_000, batch_size=384, epochs=75, layer_decay=0.75,
                end_lr=1e-6, drop_path=0.1, fc_drop=0.0, eval_split="validation")
  train_clips = 9_537 if dataset == "ucf101" else 3_570  # Split 1; HMDB51: 70 x 51.
  return dict(train_clips=train_clips, batch_size=128, epochs=100, layer_decay=0.7,
              end_lr=1e-5, drop_path=0.2, fc_drop=0.5, eval_split="test")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  values = mgtc_tiny.parse_arg(arg, dict(mgtc_tiny.DEFAULT_ARGS, frames="16",
                                         dataset="ucf101", split="1", init="pretrained"))
  if values["stage"] != "finetune":
    raise ValueError("configs/mgtc_videomae.py fine-tunes or evaluates released weights; "
                     "pretrain with configs/mgtc_ucf101.py:stage=pretrain.")
  dataset, frames, split = values["dataset"], int(values["frames"]), values["split"]
  if dataset not in ("ucf101", "hmdb51", "k400"):
    raise ValueError(f"Config arg dataset={dataset!r}: choose 'ucf101', 'hmdb51' or 'k400'.")
  if frames not in _STRIDES:
    raise ValueError(f"Config arg frames={frames}: choose from {sorted(_STRIDES)}.")
  if split not in ("1", "2", "3"):
    raise ValueError(f"Config arg split={split!r}: choose 1, 2 or 3.")
  if values["init"] not in ("pretrained", "finetuned"):
    raise ValueError(f"Config arg init={values['init']!r}: choose 'pretrained' or "
                     "'finetuned'.")
  recipe = _recipe(dataset)
  steps_per_epoch = recipe["train_clips"] // recipe["batch_size"]

  config = ml_collections.ConfigDict()
  config.stage = "finetune"
  config.seed = 0
  config.batch_size = recipe["batch_size"]
  config.eval_batch_size = 32  # Videos; each has 15 views.
  config.num_train_steps = recipe["epochs"] * steps_per_epoch
  config.log_every_steps = 50
  config.eval_every_steps = 10 * steps_per_epoch
  config.checkpoint_every_steps = 2 * steps_per_epoch
  config.checkpoint_max_to_keep = 3
  config.checkpoint_async = True
  config.init_from = ""
  config.init_from_prefixes = (("patch_embed", "encoder") if values["init"] == "pretrained"
                               else ())
  config.nan_policy = "stop"
  config.num_summary_videos = 4
  config.label_smoothing = 0.1
  config.eval_clips = 1  # The pipeline cuts the views (data.eval_views).
  config.normalize_targets = True

  config.data = pipeline.default_data_config()
  config.data.name = ("videos/kinetics400" if dataset == "k400"
                      else f"videos/{dataset}_{split}")
  config.data.eval_split = recipe["eval_split"]
  config.data.num_frames = frames
  config.data.frame_stride = _STRIDES[frames]
  config.data.resolution = 224
  config.data.random_crop = True
  config.data.random_flip = True
  config.data.eval_views = (5, 3)
  config.data.features = ("video", "label")
  config.data.num_threads = 16
  config.data.worker_count = 8

  config.model = vit.vit_b_config()
  config.model.num_frames = frames
  config.model.num_classes = pipeline.num_classes(config.data)
  config.model.drop_path_rate = recipe["drop_path"]
  config.model.fc_drop_rate = recipe["fc_drop"]
  config.model.input_standardisation = "imagenet"  # What the released models expect.
  config.model.dtype = "bfloat16"

  config.selection = masking.token_drop_config()
  config.selection.method = values["method"]
  config.selection.drop_ratio = float(values["ratio"])
  config.selection.apply_at = values["apply_at"]

  config.optimizer = optim.default_optimizer_config()
  config.optimizer.weight_decay = 0.05
  config.optimizer.weight_decay_mask = "matrices"
  config.optimizer.peak_lr = 5e-4
  config.optimizer.b2 = 0.999
  config.optimizer.end_lr = recipe["end_lr"]
  config.optimizer.warmup_steps = 5 * steps_per_epoch
  config.optimizer.clip_norm = 1e9  # VideoMAE fine-tuning does not clip.
  config.optimizer.layer_decay = recipe["layer_decay"]

  config.mesh = sharding.default_mesh_config()
  return config
