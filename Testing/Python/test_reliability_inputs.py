"""Reliability suite, inputs: a damaged or implausible input is refused with a clear message.

Truncated files, headers that claim more than the file holds, devices and FIFOs, unreadable
or missing DICOM slices, protocol values outside their physical range. Each case checks the
exit code, the message, that inputs are byte-identical and that nothing was written. New
bad-input cases go here (see docs/DEVELOPING.md).
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import pytest
import SimpleITK as sitk

from reliability import FAST, SRC, chest, check_case, cli, cli_process, snapshot, write_image


@pytest.fixture
def ct(tmp_path):
    return write_image(tmp_path / "in.nrrd", chest())


def _truncated(tmp_path, name: str, compress: bool):
    """A CT written as ``name`` and cut to 60 % of its bytes (a copy interrupted mid-way)."""
    full = tmp_path / ("full_" + name)
    img = sitk.GetImageFromArray(chest())
    img.SetSpacing((0.8, 0.8, 2.0))
    sitk.WriteImage(img, str(full), compress)
    data = full.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: int(len(data) * 0.6)])
    full.unlink()
    return cut


# ----------------------------------------------------------------------------- 5, 14: files vs their headers
@pytest.mark.parametrize("name, compress", [("t.nii", False), ("t.nii.gz", True), ("t.nrrd", True),
                                            ("t.nrrd", False), ("t.mha", True), ("t.mha", False)])
@pytest.mark.parametrize("command", ["normalize", "info", "emphysema"])
def test_truncated_image_is_refused(capsys, tmp_path, name, compress, command):
    cut = _truncated(tmp_path, name, compress)
    out = tmp_path / "out.nrrd"
    before = snapshot(cut)
    args = {"normalize": ["normalize", cut, "-o", out, *FAST], "info": ["info", cut],
            "emphysema": ["emphysema", cut]}[command]
    code, stdout, err = cli(capsys, *args)
    check_case(code, err, 2, ["truncated or damaged", str(cut)], before, [tmp_path], absent=[out])


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_header_claiming_gigabytes_is_refused_at_once(capsys, tmp_path, encoding):
    bogus = tmp_path / "claim.nrrd"
    bogus.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2048 2048 1500\nendian: little\n"
                      + f"encoding: {encoding}\n\n".encode() + b"\x1f\x8b" + b"\0" * 1000)
    before = snapshot(bogus)
    t = time.monotonic()
    code, _, err = cli(capsys, "info", bogus)
    assert time.monotonic() - t < 2.0  # nothing allocated
    check_case(code, err, 2, ["12.58 GB", "truncated or damaged"], before, [tmp_path])


def test_image_larger_than_memory_is_exit_4_before_reading(tmp_path):
    """A sparse file (no disk used) with a valid header and all its bytes, claiming four times the
    machine's memory. Run in a child limited to 8 GB of address space: should the check ever fail,
    the child gets a MemoryError instead of the machine's OOM killer."""
    import psutil

    nz = int(4 * psutil.virtual_memory().total // (4 * 2048 * 2048)) + 1  # float32 voxels: 4x the RAM
    big = tmp_path / "big.nrrd"
    header = f"NRRD0004\ntype: short\ndimension: 3\nsizes: 2048 2048 {nz}\nendian: little\nencoding: raw\n\n"
    with open(big, "wb") as fh:
        fh.write(header.encode())
        fh.truncate(len(header) + 2 * 2048 * 2048 * nz)
    limit = 8 << 30

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    r = cli_process("info", big, preexec_fn=limit_memory, timeout=120)
    check_case(r.returncode, r.stderr, 4, ["memory", "available"], {}, [tmp_path])


def test_a_device_is_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "normalize", "/dev/zero", "-o", tmp_path / "o.nrrd", *FAST)
    check_case(code, err, 2, ["not a file or folder", "character device"], {}, [tmp_path], absent=[tmp_path / "o.nrrd"])


@pytest.mark.parametrize("name", ["fake.nrrd", "fake.nii.gz", "fake.mha"])
def test_another_kind_of_file_renamed_is_refused_in_words(capsys, tmp_path, name):
    """A text file named .nrrd got ITK's 'sitk::ERROR: Unable to determine ImageIO reader', followed by a
    list of readable formats that named NRRD: the sentence now says the contents are not what the name says."""
    fake = tmp_path / name
    fake.write_text("patient notes, not an image\n" * 20)
    before = snapshot(fake)
    code, _, err = cli(capsys, "normalize", fake, "-o", tmp_path / "o.nrrd", *FAST)
    check_case(code, err, 2, ["its name says", "contents are not"], before, [tmp_path], absent=[tmp_path / "o.nrrd"])
    assert "sitk::ERROR" not in err and "ImageIO" not in err


def test_a_fifo_is_refused(tmp_path):
    """In a child process with a timeout: opening a FIFO would block forever."""
    fifo = tmp_path / "pipe.nrrd"
    os.mkfifo(fifo)
    r = cli_process("normalize", fifo, "-o", tmp_path / "o.nrrd", *FAST, timeout=60)
    check_case(r.returncode, r.stderr, 2, ["not a file or folder", "FIFO"], {}, [tmp_path], absent=[tmp_path / "o.nrrd"])


# ----------------------------------------------------------------------------- 6: DICOM slices
def _series_with_bad_slice(tmp_path, how: str):
    from test_io import write_dicom_series

    folder = tmp_path / "series"
    write_dicom_series(folder, n_slices=8, shuffle_names=False, size=64)
    files = sorted(folder.iterdir())
    bad = files[3]
    if how == "truncated":
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:  # the file is gone: a 2x gap in the positions
        bad.unlink()
    return folder, bad


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_dicom_missing_slice_refused_by_default(capsys, tmp_path, how):
    folder, bad = _series_with_bad_slice(tmp_path, how)
    out = tmp_path / "out.nrrd"
    before = snapshot(folder)
    code, _, err = cli(capsys, "normalize", folder, "-o", out, *FAST)
    words = [bad.name if how == "truncated" else "1 slice(s) are missing", "--allow-missing-slices"]
    check_case(code, err, 2, words, before, [tmp_path], absent=[out])


def test_dicom_missing_slice_interpolated_when_allowed(capsys, tmp_path):
    folder, bad = _series_with_bad_slice(tmp_path, "truncated")
    out = tmp_path / "out.nrrd"
    before = snapshot(folder)
    code, _, err = cli(capsys, "normalize", folder, "-o", out, *FAST, "--allow-missing-slices")
    assert code == 0, err
    assert "MISSING_SLICES" in err and bad.name in err
    assert sitk.ReadImage(str(out)).GetSize()[2] == 8
    assert snapshot(folder) == before


# ----------------------------------------------------------------------------- 7: protocol values
@pytest.mark.parametrize("spec, where", [
    ("kernel=smooth,dose=1,thickness=inf", "--target"), ("kernel=smooth,dose=1,thickness=1e308", "--target"),
    ("kernel=smooth,dose=1,thickness=0.001", "--target"), ("kernel=smooth,dose=1,thickness=1e6", "--target"),
    ("kernel=sharp,dose=1,thickness=nan", "--source"), ("kernel=sharp,dose=0.0001,thickness=2", "--source"),
    ("kernel=sharp,dose=1,thickness=2,spacing=50", "--source"), ("kernel=sharp,mas=-5", "--source"),
])
def test_protocol_values_outside_physical_ranges(capsys, tmp_path, ct, spec, where):
    out = tmp_path / "out.nrrd"
    before = snapshot(ct)
    args = ["--source", SRC, "--target", spec] if where == "--target" else ["--source", spec, "--target", "kernel=smooth"]
    t = time.monotonic()
    code, _, err = cli(capsys, "normalize", ct, "-o", out, *args, "--method", "mtf_ratio", "--progress", "none")
    assert time.monotonic() - t < 10
    check_case(code, err, 2, "outside the physical range", before, [tmp_path], absent=[out])


def test_a_target_spacing_leaving_one_slice_is_refused(capsys, tmp_path):
    """3 slices 2 mm apart to 5 mm slices would write a 1-slice file that no CT reader (ours included)
    takes as a volume: refused before any work, nothing written."""
    ct = write_image(tmp_path / "short.nrrd", chest(shape=(3, 64, 64)))
    out = tmp_path / "out.nrrd"
    before = snapshot(ct)
    code, _, err = cli(capsys, "normalize", ct, "-o", out, "--source", SRC, "--target", "kernel=smooth,thickness=5",
                       "--method", "mtf_ratio", "--progress", "none")
    check_case(code, err, 2, ["leaves 1 slice", "at most 4 mm"], before, [tmp_path], absent=[out])


@pytest.mark.parametrize("spec, expected", [
    ("kernel=smooth,profile=rect", "needs the thickness it shapes"),
    ("kernel=smooth,thickness=3,profile=trapezoid", "Unknown slice profile 'trapezoid'"),
    ("kernel=smooth,kernel=sharp", "kernel is given twice"),  # which one was meant? (the last silently won)
])
def test_slice_profile_refusals(capsys, tmp_path, ct, spec, expected):
    out = tmp_path / "out.nrrd"
    before = snapshot(ct)
    code, _, err = cli(capsys, "normalize", ct, "-o", out, "--source", SRC, "--target", spec, "--method", "mtf_ratio",
                       "--progress", "none")
    check_case(code, err, 2, expected, before, [tmp_path], absent=[out])


def test_unknown_method_lists_each_method_once(capsys, tmp_path, ct):
    before = snapshot(ct)
    code, _, err = cli(capsys, "normalize", ct, "-o", tmp_path / "o.nrrd", "--source", SRC, "--target", "kernel=smooth",
                       "--method", "magic", "--progress", "none")
    check_case(code, err, 2, "Unknown method 'magic'", before, [tmp_path])
    methods = [m.strip() for m in err.split("one of:")[1].strip().rstrip(".").split(",")]
    assert len(methods) == len(set(methods)) and "auto" in methods, methods


def test_v3_gpu_recipe_without_a_gpu_is_refused_before_its_run_folder_is_made(capsys, monkeypatch, tmp_path):
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.train import run as train_run

    def no_gpu(device):  # as resolve_device answers on a machine without one (the real torch may have one)
        if device != "cpu":
            raise BadInputError(f"Device {device!r} is not available here; PyTorch sees: cpu.")
        return "cpu"

    monkeypatch.setattr(train_run, "_device", no_gpu)
    truths = tmp_path / "slabs.npz"
    truths.write_bytes(b"not read")
    before = snapshot(truths)
    run_dir = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--recipe", "v3", "--device", "cuda", "-o", run_dir, "--truths", truths)
    check_case(code, err, 2, ["BAD_INPUT", "PyTorch sees: cpu"], before, [tmp_path], absent=[run_dir])
    # --truths is v3's GPU recipe's: on the CPU, or with another recipe, it is refused, not ignored
    for args in (["--recipe", "v3"], ["--recipe", "default"]):
        code, _, err = cli(capsys, "train", *args, "-o", run_dir, "--truths", truths)
        check_case(code, err, 2, ["BAD_INPUT", "--truths"], before, [tmp_path], absent=[run_dir])


def test_v3_gpu_recipe_refuses_what_it_would_ignore_before_its_run_folder_is_made(capsys, monkeypatch, tmp_path):
    """On a machine with a GPU (stood in for): --manifest/--bank, a missing --truths file and a non-CUDA device."""
    from CTNormalizeLib.train import run as train_run

    monkeypatch.setattr(train_run, "_device", lambda d: {"cuda": "cuda:0", "mps": "mps"}.get(d, d))
    monkeypatch.setattr(train_run, "_train_v3_stream", lambda *a, **k: pytest.fail("must not start"))
    manifest = tmp_path / "pairs.json"
    manifest.write_text("[]")
    before = snapshot(manifest)
    run_dir = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--recipe", "default", "--device", "cuda", "-o", run_dir)
    check_case(code, err, 2, ["BAD_INPUT", "CPU only"], before, [tmp_path], absent=[run_dir])  # was ignored
    stale = tmp_path / "stale.npz"
    np.savez(stale, slab_0=np.zeros((2, 4, 4), np.int16), spacing=np.ones(3))  # a pack that says nothing of itself
    for args, words in ((["--truths", stale], "older version"),
                        (["--manifest", manifest], "no --manifest or --bank"),
                        (["--bank", manifest], "no --manifest or --bank"),
                        (["--truths", tmp_path / "missing.npz"], "No packed lung1 slabs"),
                        (["--device", "mps"], "runs on CUDA")):
        device = [] if "--device" in args else ["--device", "cuda"]
        code, _, err = cli(capsys, "train", "--recipe", "v3", *device, "-o", run_dir, *args)
        check_case(code, err, 2, ["BAD_INPUT", words], before, [tmp_path], absent=[run_dir])


def test_cuda_without_cuda_is_bad_input_naming_what_torch_sees(capsys, monkeypatch, tmp_path, ct):
    """A stand-in torch module with no GPU (the real one may have one, and imports slowly)."""
    import sys
    import types

    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.inference.device import resolve_device

    no = types.SimpleNamespace(is_available=lambda: False)
    fake = types.SimpleNamespace(__version__="2.13.0+cpu", version=types.SimpleNamespace(cuda=None),
                                 cuda=types.SimpleNamespace(is_available=lambda: False, device_count=lambda: 0),
                                 backends=types.SimpleNamespace(mps=no))
    monkeypatch.setitem(sys.modules, "torch", fake)
    for device in ("cuda", "cuda:0", "cuda:1", "gpu"):
        with pytest.raises(BadInputError, match="PyTorch sees: cpu"):
            resolve_device(device)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    before = snapshot(ct)
    code, _, err = cli(capsys, "normalize", ct, "-o", tmp_path / "o.nrrd", "--source", SRC, "--target", "kernel=smooth",
                       "--method", "ctn-conditioned-v2", "--device", "cuda", "--progress", "none")
    check_case(code, err, 2, ["BAD_INPUT", "PyTorch sees: cpu"], before, [tmp_path], absent=[tmp_path / "o.nrrd"])


@pytest.mark.parametrize("what", ["missing", "not CT", "the output"])
def test_a_bad_reference_scan_is_named_in_the_message(capsys, tmp_path, ct, what):
    """--target-like: a missing or non-CT reference is refused naming the reference (not "the input"),
    and a reference given as the output path is never overwritten."""
    out = tmp_path / "out.nrrd"
    if what == "missing":
        ref, want = tmp_path / "nope.nrrd", "The reference scan (--target-like"
    elif what == "not CT":
        ref = write_image(tmp_path / "mr.nrrd", np.random.default_rng(0).uniform(0, 900, (8, 64, 64)).astype(np.float32))
        want = "The reference scan (--target-like"
    else:
        ref = write_image(tmp_path / "ref.nrrd", chest())
        out, want = ref, "one of its inputs"
    before = snapshot(ct, *([ref] if ref.exists() else []))
    code, _, err = cli(capsys, "normalize", ct, "-o", out, "--target-like", ref, "--method", "mtf_ratio",
                       "--progress", "none")
    check_case(code, err, 2, want, before, [tmp_path], absent=[] if what == "the output" else [out])


def test_histogram_matching_takes_the_target_like_scan_as_its_reference(capsys, tmp_path, ct):
    """--method histogram_match with --target-like and no --reference runs (the scan is the reference);
    with neither it is refused in words naming both options, and nothing is written."""
    ref = write_image(tmp_path / "ref.nrrd", chest() + 40.0)
    out = tmp_path / "out.nrrd"
    before = snapshot(ct, ref)
    code, _, err = cli(capsys, "normalize", ct, "-o", out, "--target-like", ref, "--method", "histogram_match",
                       "--progress", "none")
    assert code == 0, err
    assert snapshot(ct, ref) == before and out.is_file()
    out2 = tmp_path / "out2.nrrd"
    code, _, err = cli(capsys, "normalize", ct, "-o", out2, "--target", "kernel=smooth", "--method",
                       "histogram_match", "--progress", "none")
    check_case(code, err, 2, ["--reference", "--target-like"], before, [tmp_path], absent=[out2])


@pytest.mark.parametrize("command", ["normalize", "batch"])
def test_float32_for_a_dicom_series_is_refused_before_any_work(capsys, tmp_path, ct, command):
    """A derived DICOM series stores integers: --output-type float32 with a DICOM output is refused in words by
    both commands (normalize only warned, after the run), and nothing is written."""
    out = tmp_path / "series"
    before = snapshot(ct)
    if command == "normalize":  # the reference is missing too: the refusal comes before reading anything
        args = ["normalize", ct, "-o", f"{out}/", "--target-like", tmp_path / "missing.nrrd", "--method", "mtf_ratio"]
    else:
        args = ["batch", "--input-dir", ct.parent, "-o", out, "--target", "kernel=smooth", "--output-format", "dicom"]
    code, _, err = cli(capsys, *args, "--output-type", "float32", "--progress", "none")
    check_case(code, err, 2, ["BAD_INPUT", "--output-type float32", "stores whole HU"], before, [tmp_path],
               absent=[out])


def test_a_crop_without_air_is_not_sharpened_into_nonsense(capsys, tmp_path, lung1_path):
    """An in-plane crop of a real chest (no air around the body, no tags): the noise texture of soft
    tissue cannot show the kernel, so it is assumed (and said), not misread as a very smooth one whose
    conversion to standard asked ~9x gains (voxels of +-10,000 HU before)."""
    img = sitk.ReadImage(str(lung1_path))
    crop = write_image(tmp_path / "crop.nrrd", sitk.GetArrayFromImage(img)[20:28, 181:331, 181:331].astype(np.float32),
                       spacing=img.GetSpacing())
    before = snapshot(crop)
    out = tmp_path / "out.nrrd"
    code, said, err = cli(capsys, "normalize", crop, "-o", out, "--target", "kernel=standard", "--method", "classical",
                       "--progress", "none")
    assert code == 0, err
    assert "KERNEL_NOT_MEASURED" in said + err and "--source kernel=" in said + err
    assert snapshot(crop) == before
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(crop)))
    assert hu.min() > -1200 and hu.max() < 3300
    assert np.abs(hu.astype(np.float64) - src).mean() < 15.0


def test_report_on_a_cohort_table_points_to_the_cohort_report(capsys, tmp_path):
    """`ctnormalize report batch.csv` (a user's natural guess) failed with a bare JSON parser message."""
    table = tmp_path / "batch.csv"
    table.write_text("case,status\na,done\n")
    before = snapshot(table)
    out = tmp_path / "r.html"
    code, _, err = cli(capsys, "report", table, "-o", out)
    check_case(code, err, 2, ["Cannot read benchmark result", "cohort.html"], before, [tmp_path], absent=[out])
    # the batch's output folder itself (another natural guess) got "[Errno 21] Is a directory" alone
    run = tmp_path / "b1"
    run.mkdir()
    (run / "cohort.html").write_text("<html></html>")
    code, _, err = cli(capsys, "report", run, "-o", out)
    check_case(code, err, 2, ["cohort run's folder", str(run / "cohort.html")], before, [tmp_path], absent=[out])


@pytest.mark.parametrize("command", ["characterize", "batch"])
@pytest.mark.parametrize("header", ["binary", "text"])
def test_a_scan_given_as_a_cohort_is_refused_with_the_way_out(capsys, tmp_path, ct, command, header):
    """`ctnormalize characterize scan.nrrd` (one scan where a cohort is read) crashed reading the scan as a
    manifest CSV (an internal UnicodeDecodeError); now a bad-input exit naming `info` and a folder. A scan
    with a text header (.mhd) read as a CSV without the columns case,input; now the same message."""
    if header == "text":
        ct = write_image(tmp_path / "in.mhd", chest())
    before = snapshot(ct)
    out = tmp_path / "out"
    args = [command, ct, "-o", out / "c.html"] if command == "characterize" else \
        [command, ct, "-o", out, "--target", "kernel=smooth"]
    code, _, err = cli(capsys, *args)
    check_case(code, err, 2, ["not a manifest", "ctnormalize info"], before, [tmp_path], absent=[out])
