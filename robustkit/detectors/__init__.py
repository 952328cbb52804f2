"""Detectors; construct them with `robustkit.detector`."""

from .base import Detector

__all__ = ["Detector"]
