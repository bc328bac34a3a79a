r"""MooG as in the paper and the official MOVi configuration (34,726,787 parameters).

Run (needs MOVi-E locally or on GCS; see README "Data"):
  python -m moog.main --config=configs/moog_movi.py --workdir=DIR \
      --config.data.data_dir=gs://kubric-public/tfds
Same model on the built-in synthetic data (no download):
  python -m moog.main --config=configs/moog_movi.py:synthetic --workdir=DIR
Parameter counts and train-step FLOPs from shapes alone:
  python -m moog.main --config=configs/moog_movi.py --mode=describe

Model: 1024 tokens x 512; corrector 2 layers / 8 heads, predictor 3 / 4, decoder 6 / 2
(cross-attention only), MLP 2048; decoder lattice subsampling 8 in training, 4 at eval.
Optimizer: AdamW (0.9, 0.95, eps 1e-8, wd 1e-4 on all params), clip 1.0, warmup 1000 steps
to 1e-4, cosine to 1e-7 at the last step (docs/moog_reference.md §8).

Run length follows the intended run, not the released smoke values (1,100 steps, batch 1,
24-frame clips): batch 128, 1M steps, random 8-frame windows. Resolution (open upstream:
128² crop vs 256²): we train on `movi_e/128x128` with MOVi-style random crops resized back
to 128² (the config comment's default), which gives 32x32 = 1024 encoder tokens; pass
`:res=256` for `movi_e/256x256` (4096 encoder tokens). `remat=True` (the paper uses
gradient checkpointing). The quality numbers of this run need an accelerator pod and are
not measured here.

Measured speed (`docs/results.md`, "On an accelerator"): on one H100 at batch 8 a step takes
0.199 s (float32, which runs as TF32), 0.161 s with `--config.model.scan_unroll=0`
(unrolling the 8-frame loop is 19 % faster on a GPU, slower on a CPU; it compiles in 96 s
instead of 50 s), 0.116 s unrolled with `--config.model.compute_dtype=bfloat16`
(69 examples/s, 29 GiB). On a 2-core CPU at batch 1: 11.3 s.
"""

import ml_collections

from moog import model
from videolib import optim
from videolib import sharding
from videolib.data import pipeline


def _parse(arg: str | None) -> dict[str, str]:
  options = {}
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    options[key] = value or "1"
  unknown = set(options) - {"synthetic", "res"}
  if unknown:
    raise ValueError(f"configs/moog_movi.py: unknown argument(s) {sorted(unknown)}; "
                     "known: synthetic, res=128|256.")
  return options


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = _parse(arg)
  resolution = int(options.get("res", 128))
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_train_steps = 1_000_000
  config.batch_size = 128
  config.eval_batch_size = 128
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.checkpoint_max_to_keep = 3
  config.checkpoint_async = True  # Train on while saving; a kill may lose one save more.
  config.init_from = ""
  config.nan_policy = "stop"
  config.num_summary_videos = 4

  config.data = pipeline.default_data_config()
  if "synthetic" in options:
    config.data.name = f"synthetic_movi/{resolution}x{resolution}_24f"
  else:
    config.data.name = f"movi_e/{resolution}x{resolution}"
  config.data.num_frames = 8
  config.data.frame_stride = 1
  config.data.resolution = resolution
  config.data.random_crop = True
  config.data.features = ("video",)
  config.data.num_eval_examples = 256

  config.model = model.paper_movi_model_config()
  config.optimizer = optim.default_optimizer_config()
  config.mesh = sharding.default_mesh_config()
  return config
