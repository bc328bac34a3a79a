"""Shared machinery for the MooG and MGTC packages."""
import os

# TensorFlow (behind TFDS; it only reads and decodes data here) prints C++ INFO lines at
# import: the oneDNN notice, which TF_CPP_MIN_LOG_LEVEL does not silence, and CPU
# features. Keep its warnings and errors; users can set either variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
