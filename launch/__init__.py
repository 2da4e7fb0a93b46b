"""Launching many runs: the sweep runner and the Cloud TPU VM script."""
