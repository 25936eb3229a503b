"""Blinded reader studies: create from a manifest, read (Slicer), record answers, analyze.

Pure Python (no ``slicer``). The reading side (:class:`ReaderSession`) only opens
``study.json``, the blinded images and the reader's answer file, never the key.
"""

from .design import DESIGNS  # noqa: F401
from .create import create_study  # noqa: F401
from .manifest import read_manifest  # noqa: F401
from .answers import ReaderSession, answers_path, reader_file_stem  # noqa: F401
from .storage import load_study  # noqa: F401
