"""Atomic outputs: write to a temp file in the target folder, then ``os.replace``.

A reader never sees a half-written file, and an interrupted write (error, Ctrl-C,
SIGTERM turned into :class:`~CTNormalizeLib.errors.CancelledError`) leaves nothing
behind: the temp file is removed on *any* exception and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]

# Compound suffixes a writer chooses its format from; kept whole on the temp name.
_COMPOUND = (".nii.gz", ".tar.gz", ".json.gz")


def _suffix(name: str) -> str:
    low = name.lower()
    for s in _COMPOUND:
        if low.endswith(s):
            return name[-len(s):]
    return Path(name).suffix


def _umask() -> int:
    # os.umask can only be read by setting it; done once and restored at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _remove(path: Path):
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success move it onto ``path``.

    The temp name keeps the real suffix (``.out.tmp-k3j2.nii.gz``) so writers that pick
    the format from the extension (SimpleITK, matplotlib) write the right one. Missing
    parent folders are created.

    Parameters
    ----------
    path : str or path-like
        The final output file.

    Yields
    ------
    pathlib.Path
        Where to write. The file exists (empty) when the block starts.

    Examples
    --------
    >>> with atomic_output("out.nrrd") as tmp:          # doctest: +SKIP
    ...     sitk.WriteImage(image, str(tmp))
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder, not a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(target.name)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.tmp-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 files; give the output the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_output_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temp folder next to ``path``; on success it replaces the folder ``path``.

    For outputs made of several files (e.g. a DICOM series). An existing folder at
    ``path`` is replaced only after the new one is complete; on any exception the temp
    folder is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rmdir(old)
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            _remove(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))
