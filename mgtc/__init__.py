"""MGTC: motion-guided token compression for a VideoMAE-style video ViT.

Modules:
  selection: pixel motion scores and kept-index selection (ratio and threshold mode).
  masking: random / tube / running-cell / embedding-space baselines and the
    `kept_token_indices` dispatcher driven by `masking.token_drop_config()`.
  vit: the ViT classifier on kept tokens, the VideoMAE pretrainer, configs, builders.
  flops: GFLOPs per view (multiply-adds), analytic and from XLA.
"""
