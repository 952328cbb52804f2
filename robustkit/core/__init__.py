"""Core layer: errors, input checks, parameter declarations, atomic files, optional backends.

Imports nothing else of robustkit.
"""
