"""Detectors; construct them with :func:`robustkit.detector`."""

from .base import Detector

__all__ = ["Detector"]
