"""The atomic writer's promises, checked on the system calls: fsync before the rename, a real rename.

A test that only reads the final file cannot tell ``os.replace`` from a copy, nor a
synced temp file from an unsynced one; these spy on ``os.fsync`` / ``os.replace`` and
compare inodes. The property test interrupts a write at every step.
"""

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from CTNormalizeLib.errors import CancelledError
from CTNormalizeLib.io import atomic
from CTNormalizeLib.io.atomic import atomic_output, atomic_write_bytes, atomic_write_text


class _Spy:
    """Records fsync (inode and size of the synced file) and replace calls, in order."""

    def __init__(self, monkeypatch):
        self.calls = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            st_ = os.fstat(fd)
            self.calls.append(("fsync", st_.st_ino, st_.st_size))
            return real_fsync(fd)

        def replace(src, dst, *a, **k):
            self.calls.append(("replace", Path(src), Path(dst), os.stat(src).st_ino))
            return real_replace(src, dst, *a, **k)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("existing", [False, True])
def test_write_bytes_syncs_the_whole_temp_file_then_renames_it(tmp_path, monkeypatch, existing):
    target = tmp_path / "card.json"
    if existing:
        target.write_bytes(b"old content that is longer than the new one")
    spy = _Spy(monkeypatch)
    data = b'{"a": 1}' * 1000
    atomic_write_bytes(target, data)
    kinds = [c[0] for c in spy.calls]
    assert kinds == ["fsync", "replace"], spy.calls
    (_, synced_ino, synced_size), (_, src, dst, renamed_ino) = spy.calls
    assert synced_size == len(data)  # flushed before the sync
    assert dst == target and src.parent == target.parent and src.name.startswith(".card.tmp-")
    assert synced_ino == renamed_ino == target.stat().st_ino  # the synced file is the one now at the target
    assert target.read_bytes() == data and not src.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


def test_write_text_goes_through_the_same_path(tmp_path, monkeypatch):
    spy = _Spy(monkeypatch)
    atomic_write_text(tmp_path / "r.txt", "é")
    assert [c[0] for c in spy.calls] == ["fsync", "replace"]
    assert (tmp_path / "r.txt").read_bytes() == "é".encode("utf-8")


def test_atomic_output_renames_the_written_file_in_place(tmp_path, monkeypatch):
    """The file the writer wrote (same inode) becomes the target; the target never exists half-written."""
    target = tmp_path / "v.nii.gz"
    target.write_bytes(b"old")
    old_ino = target.stat().st_ino
    spy = _Spy(monkeypatch)
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"new volume")
        written_ino = tmp.stat().st_ino
        assert target.read_bytes() == b"old"
    replaces = [c for c in spy.calls if c[0] == "replace"]
    assert len(replaces) == 1 and replaces[0][1:3] == (tmp, target)
    assert target.stat().st_ino == written_ino != old_ino
    assert target.read_bytes() == b"new volume" and not tmp.exists()


# ----------------------------------------------------------------------------- interruptions

class _Interrupt:
    """Raise ``exc`` at one step of :func:`atomic_write_bytes` (the write after ``at_byte`` bytes, ...)."""

    def __init__(self, step, exc, at_byte):
        self.step, self.exc, self.at_byte = step, exc, at_byte

    def boom(self):
        raise self.exc("interrupted") if self.exc is not SystemExit else SystemExit(1)

    def install(self, mp):
        real_open, real_fsync, real_replace, real_chmod = open, os.fsync, os.replace, os.chmod
        me = self

        class PartialFile:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, b):
                if me.step == "write":
                    self.fh.write(b[:me.at_byte])
                    me.boom()
                return self.fh.write(b)

            def flush(self):
                if me.step == "flush":
                    me.boom()
                return self.fh.flush()

            def fileno(self):
                return self.fh.fileno()

        mp.setattr(atomic, "open", lambda *a, **k: PartialFile(real_open(*a, **k)), raising=False)
        for step, name, real in (("fsync", "fsync", real_fsync), ("replace", "replace", real_replace),
                                 ("chmod", "chmod", real_chmod)):
            if self.step == step:
                mp.setattr(os, name, lambda *a, **k: self.boom())


@settings(max_examples=min(60, settings().max_examples), suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=4096), old=st.one_of(st.none(), st.binary(max_size=64)),
       step=st.sampled_from(["none", "write", "flush", "fsync", "chmod", "replace"]),
       exc=st.sampled_from([RuntimeError, OSError, KeyboardInterrupt, SystemExit, CancelledError]),
       at_byte=st.integers(0, 4096))
def test_interrupted_write_leaves_old_file_or_new_file_and_no_temp(data, old, step, exc, at_byte):
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        target = Path(d) / "out.json"
        if old is not None:
            target.write_bytes(old)
        _Interrupt(step, exc, at_byte).install(mp)
        if step == "none":
            atomic_write_bytes(target, data)
        else:
            with pytest.raises(exc):
                atomic_write_bytes(target, data)
        mp.undo()
        names = sorted(p.name for p in Path(d).iterdir())
        if step == "none":
            assert names == ["out.json"] and target.read_bytes() == data
        elif old is None:
            assert names == []
        else:
            assert names == ["out.json"] and target.read_bytes() == old
