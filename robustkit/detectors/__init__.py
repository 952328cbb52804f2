"""Detectors; construct them with `detector`."""

from .base import Detector

__all__ = ["Detector"]
