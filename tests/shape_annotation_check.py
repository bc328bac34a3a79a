"""Traces the models, heads and losses with their jaxtyping annotations checked.

Run as a script (`tests/test_shape_annotations.py` does, in a fresh interpreter): the
import hook must be installed before `moog`, `mgtc` and `videolib` are imported, and it
makes every annotated function check its arguments' and results' shapes with beartype.
Tracing with `jax.eval_shape` checks every call made while tracing, at no compute cost.
Prints one line per traced program, then 'checked'.
"""

import sys

from jaxtyping import install_import_hook

with install_import_hook(["moog", "mgtc", "videolib"], "beartype.beartype"):
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import jaxtyping

  from configs import moog_readout_tiny
  from configs import moog_tiny
  from moog import grid_baselines
  from moog import model as moog_model
  from moog import task as moog_task
  from moog.readouts import attention_heads
  from moog.readouts import heads
  from moog.readouts import task as readout_task
  from videolib.data import pipeline


def _trace(name, task, config):
  spec = pipeline.batch_spec(config.data, config.batch_size)
  rng = jax.random.key(0)
  params = jax.eval_shape(task.init, rng, spec)
  jax.eval_shape(task.loss_fn, params, spec, rng)
  jax.eval_shape(task.eval_fn, params, spec, rng)
  jax.eval_shape(task.summaries, params, spec, rng)
  print(name, flush=True)


def _pretraining_config(backbone):
  config = moog_tiny.get_config()
  config.batch_size = 2
  config.backbone = backbone
  if backbone != "moog":
    config.model.num_tokens = grid_baselines.grid_cells(config.model, config.data.resolution)
  return config


def _readout_config(tracking_head):
  config = moog_readout_tiny.get_config()
  config.batch_size = 2
  config.readout.tracking_head = tracking_head
  return config


def main():
  config = _pretraining_config("moog")
  _trace("moog pretraining", moog_task.MooGTask(config), config)
  for backbone in ("grid", "grid_rec"):
    config = _pretraining_config(backbone)
    _trace(f"{backbone} pretraining", moog_task.MooGTask(config), config)
  for tracking_head in ("recurrent", "correlation"):
    config = _readout_config(tracking_head)
    _trace(f"{tracking_head} readouts", readout_task.ReadoutTask(config), config)

  for kind, queries in (("points", (2, 5, 2)), ("boxes", (2, 3, 4))):
    head_config = attention_heads.released_point_head_config()
    head_config.update(kind=kind, num_frames=4, num_tiles=2 if kind == "points" else 1,
                       width=32, num_heads=2, query_dim=16, query_hidden=16)
    head = attention_heads.build_attention_readout(head_config)
    features, query = jnp.zeros((2, 4, 8, 24)), jnp.zeros(queries)
    variables = jax.eval_shape(head.init, jax.random.key(0), features, query)
    jax.eval_shape(head.apply, variables, features, query)
    print(f"attention {kind} head", flush=True)

  # The checks bite: a wrong shape fails at the call, naming the parameter.
  maps = jnp.zeros((2, 4, 8, 8, 16))
  try:
    heads.sample_maps(maps, jnp.zeros((2, 5, 3, 2)))  # 3 frames, the maps have 4.
  except jaxtyping.TypeCheckError as error:
    assert "xy" in str(error), error
    print("wrong shape refused", flush=True)
  else:
    sys.exit("sample_maps accepted positions of 3 frames for maps of 4.")
  model = moog_model.build_moog(moog_model.tiny_model_config())
  try:
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 16, 16, 4)), train=False)
  except jaxtyping.TypeCheckError as error:
    assert "video" in str(error), error
    print("four-channel video refused", flush=True)
  else:
    sys.exit("MooG accepted a four-channel video.")
  print("checked", flush=True)


if __name__ == "__main__":
  main()
