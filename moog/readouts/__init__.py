"""Readouts on frozen MooG states: heads, their training task and sliced evaluation."""
