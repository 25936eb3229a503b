"""Input files are checked against their own headers before any voxel buffer is allocated.

A NRRD, NIfTI or MetaImage header states the image size; the reader allocates that much
and fills what the file holds, so a truncated file reads as complete (the missing voxels
become 0) and a 1 kB header claiming 2048 x 2048 x 1500 voxels makes the reader allocate
gigabytes before failing. :func:`check_image_file` compares the claim with the bytes the
file can supply:

- raw data: the payload (file size after the header, or the detached data file) must hold
  every voxel;
- gzip/zlib data: deflate cannot compress more than about 1032:1, so a smaller payload
  cannot hold the claim; a gzip stream's trailer also records the uncompressed size (mod
  2**32), and when it disagrees the stream is decompressed once to find out (a truncated
  stream ends early);
- MetaImage ``CompressedDataSize`` must be present in full;

and the voxels (as float32, plus the read buffer) must fit in the available memory.

Own code because neither SimpleITK nor ITK exposes the header's data offset or encoding
before reading, and no maintained Python library checks a file against its header.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path
from typing import Optional

from ..errors import BadInputError, ResourceExhaustedError

#: deflate's largest compression ratio (RFC 1951 streams of 258-byte matches); zlib states 1032:1.
DEFLATE_MAX_RATIO = 1032
_HEADER_MAX = 1 << 20


def _claimed_bytes(reader) -> tuple[int, int]:
    """(voxels, bytes) stated by a SimpleITK reader after ``ReadImageInformation``."""
    import SimpleITK as sitk

    n = 1
    for s in reader.GetSize():
        n *= int(s)
    name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    m = re.search(r"(\d+)-bit", name)
    bits = int(m.group(1)) if m else 8
    if "complex" in name:
        bits *= 2
    comps = max(1, int(reader.GetNumberOfComponents()))
    return n, n * comps * bits // 8


def _mb(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} bytes"


# ----------------------------------------------------------------------------- payloads

def _nrrd_payload(path: Path) -> Optional[tuple[str, Path, int]]:
    """(encoding, data file, payload bytes) of a NRRD file, or None when not checkable."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_MAX)
    end = head.find(b"\n\n")
    if end < 0:
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return None
        offset = end + 4
    else:
        offset = end + 2
    fields = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    enc = fields.get("encoding", "raw").lower()
    enc = {"gz": "gzip", "bz2": "bzip2", "txt": "ascii", "text": "ascii"}.get(enc, enc)
    data_file = fields.get("data file") or fields.get("datafile")
    skip = int(fields.get("byte skip", "0") or 0)
    if data_file:
        if data_file.upper().startswith("LIST") or "%" in data_file or " " in data_file:
            return None
        data = (path.parent / data_file)
        if not data.is_file():
            raise BadInputError(f"{path}: its data file {data} does not exist.")
        size = data.stat().st_size
        return enc, data, size - max(skip, 0)
    return enc, path, path.stat().st_size - offset - max(skip, 0)


def _nifti_offset(head: bytes) -> Optional[int]:
    """vox_offset of a NIfTI-1/2 header (first bytes of the uncompressed file), or None."""
    if len(head) < 352:
        return None
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size == 348:
            return int(struct.unpack(endian + "f", head[108:112])[0])
        if size == 540 and len(head) >= 176:
            return int(struct.unpack(endian + "q", head[168:176])[0])
    return None


def _mha_payload(path: Path) -> Optional[tuple[str, Path, int, Optional[int]]]:
    """(encoding, data file, payload bytes, CompressedDataSize) of a MetaImage, or None."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_MAX)
    fields, offset = {}, None
    pos = 0
    for raw in head.split(b"\n"):
        pos += len(raw) + 1
        line = raw.decode("latin-1").strip()
        key, _, value = line.partition("=")
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            offset = pos
            break
    if offset is None:
        return None
    enc = "zlib" if fields.get("compresseddata", "false").lower() == "true" else "raw"
    csize = fields.get("compresseddatasize")
    csize = int(csize) if csize and csize.isdigit() else None
    target = fields["elementdatafile"]
    if target.upper() == "LOCAL":
        return enc, path, path.stat().st_size - offset, csize
    if target.upper().startswith("LIST") or "%" in target or " " in target:
        return None
    data = path.parent / target
    if not data.is_file():
        raise BadInputError(f"{path}: its data file {data} does not exist.")
    skip = int(fields.get("headersize", "0") or 0)
    return enc, data, data.stat().st_size - max(skip, 0), csize


# ----------------------------------------------------------------------------- checks

def _gzip_complete(path: Path, offset: int, expected: int) -> bool:
    """True if the gzip stream starting at ``offset`` decompresses to ``expected`` bytes.

    The trailer's ISIZE (uncompressed size mod 2**32) is compared first; only when it
    disagrees (a truncated stream, or a multi-member file) is the stream decompressed.
    """
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        if end - offset >= 18:
            fh.seek(end - 4)
            if struct.unpack("<I", fh.read(4))[0] == expected % (1 << 32):
                return True
        fh.seek(offset)
        total = 0
        try:
            with gzip.GzipFile(fileobj=fh) as gz:
                while True:
                    chunk = gz.read(1 << 22)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > expected:
                        return True  # more than claimed: the reader uses what it needs
        except (OSError, EOFError, zlib.error):
            return False
    return total >= expected


def _refuse_short(path: Path, have: int, need: int, n_vox: int, what: str = "holds"):
    raise BadInputError(
        f"{path} is truncated or damaged: its header describes {n_vox} voxels ({_mb(need)}), but the file "
        f"{what} only {_mb(max(have, 0))} of image data. Re-export or re-copy the file.")


def _check_payload(path: Path, fmt: str, n_vox: int, nbytes: int):
    low = path.name.lower()
    if fmt == "NRRD":
        info = _nrrd_payload(path)
        if info is None:
            return
        enc, data, payload = info
        if enc == "raw" and payload < nbytes:
            _refuse_short(path, payload, nbytes, n_vox)
        if enc == "gzip":
            if payload * DEFLATE_MAX_RATIO < nbytes:
                _refuse_short(path, payload, nbytes, n_vox, "(compressed) could hold")
            start = data.stat().st_size - payload
            if not _gzip_complete(data, start, nbytes):
                raise BadInputError(f"{path} is truncated or damaged: its compressed image data ends before "
                                    f"the {n_vox} voxels its header describes. Re-export or re-copy the file.")
    elif fmt == "NIfTI":
        if low.endswith(".nii"):
            with open(path, "rb") as fh:
                offset = _nifti_offset(fh.read(544))
            if offset is not None and path.stat().st_size - offset < nbytes:
                _refuse_short(path, path.stat().st_size - offset, nbytes, n_vox)
        elif low.endswith(".nii.gz"):
            size = path.stat().st_size
            if size * DEFLATE_MAX_RATIO < nbytes:
                _refuse_short(path, size, nbytes, n_vox, "(compressed) could hold")
            try:
                with gzip.open(path, "rb") as gz:
                    offset = _nifti_offset(gz.read(544))
            except (OSError, EOFError, zlib.error):
                offset = None
            if offset is None or not _gzip_complete(path, 0, offset + nbytes):
                raise BadInputError(f"{path} is truncated or damaged: its compressed data ends before the "
                                    f"{n_vox} voxels its header describes. Re-export or re-copy the file.")
    elif fmt == "MetaImage":
        info = _mha_payload(path)
        if info is None:
            return
        enc, data, payload, csize = info
        if enc == "raw" and payload < nbytes:
            _refuse_short(path, payload, nbytes, n_vox)
        if enc == "zlib":
            if csize is not None and payload < csize:
                raise BadInputError(f"{path} is truncated or damaged: its header says {_mb(csize)} of compressed "
                                    f"image data follow, the file holds {_mb(max(payload, 0))}. "
                                    "Re-export or re-copy the file.")
            if payload * DEFLATE_MAX_RATIO < nbytes:
                _refuse_short(path, payload, nbytes, n_vox, "(compressed) could hold")


def check_memory(n_voxels: int, nbytes: int, path) -> None:
    """Refuse (exit 4) when the voxels as float32 plus the read buffer exceed the available memory."""
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no measurement, no refusal
        return
    need = int(n_voxels) * 4 + int(nbytes)
    if need > available:
        raise ResourceExhaustedError(
            f"{path} holds {n_voxels} voxels; reading it needs about {_mb(need)} of memory, "
            f"{_mb(available)} are available.")


def check_image_file(path, reader, fmt: Optional[str]) -> None:
    """Check a file against the header a SimpleITK ``reader`` has read (``ReadImageInformation``).

    Parameters
    ----------
    path : path
    reader : SimpleITK.ImageFileReader
        After ``ReadImageInformation()``.
    fmt : str or None
        ``NRRD``, ``NIfTI``, ``MetaImage`` (other formats get the memory check only).

    Raises
    ------
    BadInputError
        The file holds less image data than its header describes.
    ResourceExhaustedError
        The image would not fit in memory.
    """
    path = Path(path)
    n_vox, nbytes = _claimed_bytes(reader)
    if fmt:
        _check_payload(path, fmt, n_vox, nbytes)
    check_memory(n_vox, nbytes, path)
