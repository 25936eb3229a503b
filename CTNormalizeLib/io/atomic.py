"""Atomic outputs: write to a temp file in the target folder, then ``os.replace``.

A reader never sees a half-written file, and an interrupted write (error, Ctrl-C,
SIGTERM turned into :class:`~CTNormalizeLib.errors.CancelledError`) leaves nothing
behind: the temp file is removed on *any* exception and the target is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

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
            # A writer thread that was abandoned (see CTNormalizeLib.interruptible) may create
            # its file between rmtree's listing and its rmdir: try again briefly.
            for _ in range(20):
                if not path.exists():
                    break
                time.sleep(0.01)
                shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the folders created, deepest first.

    Used by writers so that missing folders are treated the same everywhere (created), and
    removed again by :func:`remove_empty` when the write fails.
    """
    missing = []
    f = Path(folder)
    while not f.exists():
        missing.append(f)
        if f.parent == f:
            break
        f = f.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty(folders: list[Path]):
    """Remove the folders a failed write created (deepest first), if they are still empty."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            break


def _temp_prefix(stem: str) -> str:
    # Keep temp names within NAME_MAX (255 bytes) even for long output names.
    short = stem.encode("utf-8")[:100].decode("utf-8", "ignore")
    return f".{short}.tmp-"


@contextlib.contextmanager
def atomic_output(path: PathLike, verify: Optional[Callable[[Path], None]] = None,
                  private_dir: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success move it onto ``path``.

    The temp name keeps the real suffix (``.out.tmp-k3j2.nii.gz``) so writers that pick
    the format from the extension (SimpleITK, matplotlib) write the right one. Missing
    parent folders are created, and removed again when the write fails. A file already at
    ``path`` is replaced only by a complete, verified new file; on any failure it is left
    as it was.

    Parameters
    ----------
    path : str or path-like
        The final output file.
    verify : callable(Path), optional
        Called on the written temp file before it is moved into place; it raises when the
        file is not complete (the temp file is then removed and ``path`` untouched).
    private_dir : bool
        Write into a fresh hidden folder next to ``path``, under ``path``'s own name, and
        remove the whole folder on failure. For writers that may still be running in an
        abandoned thread after a cancel (whatever they write then lands in a removed folder).

    Yields
    ------
    pathlib.Path
        Where to write. The file exists (empty) when the block starts, unless ``private_dir``.

    Examples
    --------
    >>> with atomic_output("out.nrrd") as tmp:          # doctest: +SKIP
    ...     sitk.WriteImage(image, str(tmp))
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder, not a file path")
    created = make_parents(target.parent)
    suffix = _suffix(target.name)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    holder = None
    try:
        if private_dir:
            holder = Path(tempfile.mkdtemp(prefix=_temp_prefix(stem), dir=target.parent))
            tmp = holder / target.name
        else:
            fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(stem), suffix=suffix, dir=target.parent)
            os.close(fd)
            tmp = Path(tmp_name)
    except BaseException:
        remove_empty(created)
        raise
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        # mkstemp makes 0600 files; give the output the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
        if holder is not None:
            _remove(holder)
    except BaseException:
        _remove(holder if holder is not None else tmp)
        remove_empty(created)
        raise


@contextlib.contextmanager
def atomic_output_dir(path: PathLike) -> Iterator[Path]:
    """Yield a temp folder next to ``path``; on success it replaces the folder ``path``.

    For outputs made of several files (e.g. a DICOM series). An existing folder at
    ``path`` is replaced only after the new one is complete; on any exception the temp
    folder is removed and ``path`` is left as it was.
    """
    target = Path(path)
    created = make_parents(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name), dir=target.parent))
    except BaseException:
        remove_empty(created)
        raise
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
        remove_empty(created)
        raise


def _same_size(n: int) -> Callable[[Path], None]:
    def verify(tmp: Path):
        got = tmp.stat().st_size
        if got != n:
            raise OSError(errno.EIO, f"wrote {got} of {n} bytes", str(tmp))
    return verify


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsynced, size checked); returns the path."""
    with atomic_output(path, verify=_same_size(len(data))) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))
