"""The released Ego4D MooG checkpoints: loading, renaming and running them."""
