"""Self-supervised video representation learning in JAX: MooG and MGTC.

Direct dependencies are pinned exactly; `constraints.txt` pins the whole resolved set
(install with `pip install -c constraints.txt -e '.[test]'`).
"""
import setuptools

INSTALL_REQUIRES = [
    "absl-py==2.5.1",
    "array_record==0.8.6",
    # Decodes video files (videolib/data/video_folder.py); the wheels bundle FFmpeg.
    "av==18.1.1",
    "chex==0.1.92",
    "einops==0.8.2",
    "flax==0.12.8",
    "grain==0.2.18",
    # TFDS 4.9.10 imports it for builders defined inside packages.
    "importlib_resources==7.1.0",
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "jaxtyping==0.3.11",
    # Plots of `moog/notebook_utils.py` (the readout notebook, colabs/).
    "matplotlib==3.11.2",
    "ml-collections==1.1.0",
    "numpy==2.4.6",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "pillow==13.0.0",
    # Released VideoMAE weights in Hugging Face's format (mgtc/videomae_weights.py).
    "safetensors==0.8.0",
    "tensorboard==2.21.0",
    # TensorBoard writer with `purge_step` (a resumed run shows each step once).
    "tensorboardX==2.6.5",
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    # Single-threaded numpy BLAS in the input pipeline (videolib/data/pipeline.py).
    "threadpoolctl==3.6.0",
    "tqdm==4.70.1",
]

TEST_REQUIRES = [
    # tests/test_shape_annotations.py checks the jaxtyping annotations with beartype.
    "beartype==0.23.1",
    "hypothesis==6.170.15",
    # tests/test_notebook.py executes colabs/*.ipynb in a fresh kernel.
    "ipykernel==7.4.0",
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
]

setuptools.setup(
    name="offgrid-video",
    version="0.1.0",
    description="MooG and MGTC: self-supervised video representation learning in JAX/Flax.",
    python_requires=">=3.11,<3.14",  # Tested on 3.11; every pin has 3.12 and 3.13 wheels.
    packages=setuptools.find_packages(include=["videolib*", "moog*", "mgtc*", "configs*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
