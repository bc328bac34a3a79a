"""Test-wide setup: 8 simulated CPU devices, set before jax initialises.

Every test therefore runs with `jax.device_count() == 8`, so sharding, donation and
checkpoint-restore paths are exercised for real. Keep shapes tiny.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
