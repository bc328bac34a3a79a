"""MooG (Moving Off-the-Grid, arXiv 2411.05927): model, readouts, task and entry point."""
