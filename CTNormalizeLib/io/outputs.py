"""The output guard: every command that writes checks and publishes its outputs through it.

Before any work, an :class:`OutputGuard` refuses an output that

- resolves (``realpath``, symbolic links followed; hard links matched by inode) to one of
  the run's inputs, to another output of the same run, or to a protected file (a study's
  key); or lies inside an input folder (a DICOM series) or a protected folder;
- is an existing folder, has a name too long for its file system, or sits below a path
  component that is a file;
- cannot be written: the nearest existing folder is probed by creating (and removing) a
  temp folder in it, which catches read-only file systems, ``/proc`` and permissions;
- does not fit: the expected sizes of the outputs on one file system are compared with
  its free space.

Missing parent folders are created (the same for every output of every command) when the
first file is staged, and removed again if the run fails. Files are written into a hidden
staging folder next to their target, under their own name, and moved into place together
by :meth:`OutputGuard.commit` (signals held off meanwhile); a failed or cancelled run
removes the staging folders, so a file that existed before the run is never deleted or
replaced by anything but a complete new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from .. import cancellation
from ..errors import BadInputError, CTNormalizeError, DiskFullError, InternalError, from_os_error
from .atomic import _remove, make_parents, remove_empty

PathLike = Union[str, os.PathLike]

#: Free space kept in reserve beyond the expected output sizes.
SPACE_MARGIN = 16 * 1024 * 1024
_STAGE_PREFIX = ".ctnormalize-staging-"


@dataclass
class _Output:
    path: Path  # as given (expanded)
    real: Path  # realpath
    kind: str  # "file" or "dir"
    nbytes: int = 0
    staged: Optional[Path] = None


@dataclass
class _Known:
    real: Path
    inode: Optional[tuple]
    is_dir: bool
    label: str = field(default="input")


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _inode(path: Path) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _inside(child: Path, folder: Path) -> bool:
    return child != folder and folder in child.parents


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not os.path.lexists(p):
        if p.parent == p:
            break
        p = p.parent
    return p


def volume_nbytes(n_voxels: int, path: PathLike, bytes_per_voxel: int = 4) -> int:
    """Expected size of a volume output: half of raw for the compressed formats (``.nrrd``,
    ``.nii.gz``, ``.mha``), raw for anything else (``.nii``, a DICOM series folder).

    Compressed CT rarely shrinks below half (noise does not compress), so half of raw is a
    conservative estimate for the free-space check; the verified write is the safety net.
    """
    raw = int(n_voxels) * int(bytes_per_voxel)
    compressed = str(path).lower().endswith((".nrrd", ".nii.gz", ".mha"))
    return raw // 2 if compressed else raw


class OutputGuard:
    """Check a run's outputs against its inputs before the work; publish them together after.

    Parameters
    ----------
    inputs : iterable of path
        Files and folders the run reads (None entries are skipped). No output may be one
        of them (same real path or inode) or lie inside an input folder.
    protected : iterable of path
        Further files or folders no output may be or lie inside (a study's key, its
        ``answers/`` and ``items/``).

    Examples
    --------
    >>> guard = OutputGuard(inputs=[ct])                    # doctest: +SKIP
    >>> out = guard.add("out.nrrd", nbytes=10_000_000)
    >>> guard.check()                                      # before the work
    >>> with guard:                                        # staging removed on any exception
    ...     write_volume(vol, guard.stage(out))
    ...     guard.commit()
    """

    def __init__(self, inputs: Iterable[Optional[PathLike]] = (), protected: Iterable[Optional[PathLike]] = ()):
        self._known: list[_Known] = []
        self._outputs: list[_Output] = []
        self._stages: dict[Path, Path] = {}
        self._staged_names: dict[str, str] = {}
        self._created: list[Path] = []
        self.add_inputs(inputs)
        self.add_inputs(protected, protected=True)

    def add_inputs(self, paths: Iterable[Optional[PathLike]], protected: bool = False):
        """Register more inputs (or protected paths); None entries are skipped.

        Register inputs before outputs: an output is checked against the inputs known when
        it is added.
        """
        for p in paths:
            self._remember(p, "protected" if protected else "input")

    def _remember(self, p, label):
        if p is None or str(p) == "":
            return
        real = _real(p)
        self._known.append(_Known(real, _inode(real), os.path.isdir(real), label))

    # ------------------------------------------------------------------ registration
    def add(self, path: PathLike, nbytes: int = 0, kind: str = "file", what: str = "output",
            validate: Optional[Callable[[Path], None]] = None) -> Path:
        """Register an output and check at once that it is none of the inputs.

        Parameters
        ----------
        path : path
            The output file (``kind="file"``) or folder (``kind="dir"``, e.g. a new study).
        nbytes : int
            Its expected size, for the free-space check (0 = small).
        what : str
            How the message names it (``"--report"``, ``"-o"``).
        validate : callable(Path), optional
            A further check of the path (e.g. a writable file format), raising BadInputError.

        Returns
        -------
        pathlib.Path
            The path as given (``~`` expanded).

        Raises
        ------
        BadInputError
            The output is an input, another output, protected, or inside an input folder.
        """
        given = Path(os.path.expanduser(str(path)))
        if validate is not None:
            validate(given)
        real = _real(given)
        inode = _inode(real)
        for k in self._known:
            same = real == k.real or (inode is not None and inode == k.inode)
            if same:
                what_is = "one of its inputs" if k.label == "input" else "a file it must not change"
                raise BadInputError(f"The {what} path {given} is {what_is} ({k.real}); "
                                    "CTNormalize never overwrites its inputs. Choose another path.")
            if k.is_dir and _inside(real, k.real):
                kind_txt = "the input folder" if k.label == "input" else "the protected folder"
                raise BadInputError(f"The {what} path {given} lies inside {kind_txt} {k.real}; "
                                    "write outside it (a file there would be taken for part of it).")
            if kind == "dir" and _inside(k.real, real) and k.label == "input":
                raise BadInputError(f"The {what} folder {given} holds the input {k.real}; CTNormalize never "
                                    "overwrites its inputs. Choose a new folder.")
        for o in self._outputs:
            if real == o.real or (inode is not None and inode == _inode(o.real)):
                raise BadInputError(f"The {what} path {given} is already another output of this run ({o.path}); "
                                    "give each output its own path.")
        if kind == "file" and os.path.isdir(given):  # isdir: False also for an unusable path
            raise BadInputError(f"The {what} path {given} is a folder; give a file name.")
        self._outputs.append(_Output(given, real, kind, int(nbytes)))
        return given

    def expect(self, path: PathLike, nbytes: int):
        """Set the expected size of a registered output (known only after reading the input)
        and check again that the outputs fit (:class:`DiskFullError` otherwise)."""
        self._find(path).nbytes = int(nbytes)
        self._check_all_space()

    def _find(self, path) -> _Output:
        real = _real(path)
        for o in self._outputs:
            if o.real == real:
                return o
        raise KeyError(f"{path} is not a registered output")

    # ------------------------------------------------------------------ checks
    def check(self):
        """Check every output can be written and that they fit; call before the work.

        Raises
        ------
        BadInputError
            A parent that is a file, a read-only or special file system, no permission,
            a name too long.
        DiskFullError
            The expected sizes exceed the free space (exit 4).
        """
        for o in self._outputs:
            anc = self._ancestor(o)
            if not anc.is_dir():
                raise BadInputError(f"Cannot write {o.path}: {anc} is a file, not a folder.")
            self._check_name(o, anc)
            self._probe(o, anc)
        self._check_all_space()

    @staticmethod
    def _ancestor(o: _Output) -> Path:
        return _existing_ancestor(o.real if o.kind == "dir" else o.real.parent)

    def _check_all_space(self):
        need: dict[int, list] = {}
        for o in self._outputs:
            anc = self._ancestor(o)
            if anc.is_dir():
                need.setdefault(os.stat(anc).st_dev, [anc, 0])[1] += o.nbytes
        for anc, nbytes in need.values():
            self._check_space(anc, nbytes)

    @staticmethod
    def _check_name(o: _Output, anc: Path):
        try:
            name_max = os.pathconf(anc, "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = 255
        for part in o.real.relative_to(anc).parts if o.real != anc else ():
            if len(part.encode("utf-8")) > name_max:
                raise BadInputError(f"Cannot write {o.path}: the name {part[:40]}... is {len(part.encode())} bytes "
                                    f"long; this file system allows {name_max}.")

    @staticmethod
    def _probe(o: _Output, anc: Path):
        try:
            probe = tempfile.mkdtemp(prefix=".ctnormalize-probe-", dir=anc)
            os.rmdir(probe)
        except OSError as exc:
            err = from_os_error(exc, "write in")
            raise type(err)(f"Cannot write {o.path}: the folder {anc} is not writable "
                            f"({exc.strerror or exc}).") from None

    @staticmethod
    def _check_space(anc: Path, nbytes: int):
        if nbytes <= 0:
            return
        free = shutil.disk_usage(anc).free
        if free < nbytes + SPACE_MARGIN:
            raise DiskFullError(
                f"Not enough free space in {anc}: the outputs need about {_mb(nbytes)} "
                f"(+{_mb(SPACE_MARGIN)} reserve), {_mb(free)} are free. Free some space or write elsewhere.")

    # ------------------------------------------------------------------ staging and publishing
    def stage(self, path: PathLike) -> Path:
        """Where to write the registered output ``path``: same name, in a hidden staging folder
        next to it (created, with any missing parents, on first use). For a folder output (a
        DICOM series) the staged folder does not exist yet: its writer creates it."""
        o = self._find(path)
        folder = o.path.parent
        if folder not in self._stages:
            self._created += make_parents(folder)
            self._stages[folder] = Path(tempfile.mkdtemp(prefix=_STAGE_PREFIX, dir=folder))
            self._staged_names[str(self._stages[folder]) + os.sep] = str(folder) + os.sep
        o.staged = self._stages[folder] / o.path.name
        return o.staged

    def commit(self) -> list[Path]:
        """Move every staged output onto its target, with SIGTERM/SIGINT held off meanwhile.

        This is a command's last step: once the outputs are in place a SIGTERM/SIGINT no longer
        cancels the run (:mod:`CTNormalizeLib.cancellation`).

        Raises
        ------
        DiskFullError
            A staged output is empty (its writer failed quietly).
        InternalError
            A staged output was never written.
        """
        todo = [o for o in self._outputs if o.staged is not None]
        for o in todo:
            try:
                st = os.stat(o.staged)
            except FileNotFoundError:
                raise InternalError(f"{o.path} was staged but never written.") from None
            if o.kind == "dir":
                if not stat.S_ISDIR(st.st_mode) or not any(o.staged.iterdir()):
                    raise DiskFullError(f"Writing {o.path} failed: the written folder is empty.")
            elif not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                raise DiskFullError(f"Writing {o.path} failed: the written file is empty.")
        with cancellation.publishing(), _signals_held():
            for o in todo:
                if o.kind == "dir" and os.path.isdir(o.path):
                    # A folder cannot be replaced in one rename: move the old one into the staging
                    # folder (removed below), then the new one into place; undo if that fails.
                    old = o.staged.with_name(o.staged.name + ".replaced")
                    os.replace(o.path, old)
                    try:
                        os.replace(o.staged, o.path)
                    except BaseException:
                        os.replace(old, o.path)
                        raise
                else:
                    os.replace(o.staged, o.path)
                o.staged = None
        # publishing() marked the outputs published: the signals _signals_held delivered on its way out
        # were only recorded, and a cancel from now on comes too late to undo anything.
        self._cleanup(success=True)
        return [o.path for o in todo]

    def abort(self):
        """Remove the staging folders and the folders this run created; targets stay as they were (a signal
        meanwhile is recorded, not raised: :func:`CTNormalizeLib.cancellation.holding`)."""
        for o in self._outputs:
            o.staged = None
        with cancellation.holding():
            self._cleanup(success=False)

    def _cleanup(self, success: bool):
        for stage_dir in self._stages.values():
            _remove(stage_dir)
        self._stages.clear()
        if not success:
            remove_empty(self._created)
        self._created = []

    def public(self, message: str) -> str:
        """``message`` with staged paths shown as the outputs' own paths (for error messages)."""
        for staged, folder in self._staged_names.items():
            message = message.replace(staged, "" if folder == "." + os.sep else folder)
        return message

    def __enter__(self) -> "OutputGuard":
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
            if isinstance(exc, CTNormalizeError):
                exc.message = self.public(exc.message)
        else:
            self._cleanup(success=True)
        return False


@contextlib.contextmanager
def _signals_held():
    """Block SIGTERM/SIGINT in the calling thread while the outputs are moved into place (delivered after).

    Only the calling thread: another thread may take a process-directed signal meanwhile, and its
    Python handler runs in the main thread at once, so :func:`CTNormalizeLib.cancellation.publishing`
    is what keeps a cancel from raising in the middle of the moves.
    """
    old = None
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask"):
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _mb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def check_html_name(path: PathLike, what: str = "The report") -> None:
    """Refuse an HTML report path without an ``.html``/``.htm`` name (a typo there could name an input)."""
    if not str(path).lower().endswith((".html", ".htm")):
        raise BadInputError(f"{what} is an HTML file; give a name ending in .html, not {str(path)!r}.")


def check_regular_input(path: PathLike, what: str = "input") -> Path:
    """``path`` as a Path if it is an existing regular file or folder, else a clear BadInputError.

    Devices (``/dev/zero``), FIFOs and sockets are refused without opening them (opening a
    FIFO would block).
    """
    p = Path(os.path.expanduser(str(path)))
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise BadInputError(f"Input not found: {p}") from None
    except OSError as exc:
        raise from_os_error(exc, "read") from None
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return p
    kind = ("a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
            else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "not a regular file")
    raise BadInputError(f"The {what} {p} is {kind}, not a file or folder; give an image file or a DICOM folder.")
