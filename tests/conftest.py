"""Test-wide setup: 8 simulated CPU devices, set before jax initialises.

Every test therefore runs with `jax.device_count() == 8`, so sharding, donation and
checkpoint-restore paths are exercised for real. Keep shapes tiny.
"""
import os
import tempfile

import hypothesis

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compiled programs are cached on disk and shared by tests and xdist workers: most test time
# on CPU is XLA compilation of the same small programs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "videolib_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Property tests draw the same examples on every run: a failure reproduces, CI never flakes.
hypothesis.settings.register_profile("deterministic", derandomize=True)
hypothesis.settings.load_profile("deterministic")
