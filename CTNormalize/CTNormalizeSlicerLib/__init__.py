"""Helpers of the CTNormalize Slicer module.

Everything here runs without Qt widgets, so it is tested headless against real MRML
(the ``slicer-core`` wheel). ``slicer`` is imported inside functions; ``qt`` only in the
thin timer adapter of :mod:`.process`.
"""
