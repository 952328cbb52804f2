"""Modelling layer: datasets, models, the training loop, checkpoints and input squeezers.

Imports only `robustkit.core`.
"""
