"""Reliability suite, outputs: no command overwrites an input or publishes a broken file.

Each case runs a command as a user would and checks the exit code, the message, that the
inputs are byte-identical afterwards and that no partial or stale output is left
(:func:`reliability.check_case`). New bad-output cases go here (see docs/DEVELOPING.md).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reliability import FAST, REPO, chest, check_case, cli, leftovers, snapshot, write_image


@pytest.fixture
def ct(tmp_path):
    return write_image(tmp_path / "in.nrrd", chest())


def _no_work(monkeypatch):
    """Make planning and the normalization fail loudly: a case that must be refused before the work."""
    import CTNormalizeLib.normalization as N
    import CTNormalizeLib.plan as P

    def boom(*a, **k):
        raise AssertionError("the work started although the outputs were unusable")

    monkeypatch.setattr(P, "make_plan", boom)
    monkeypatch.setattr(N, "execute", boom)


# ----------------------------------------------------------------------------- 1, 2: outputs vs inputs
@pytest.mark.parametrize("case", ["report_is_input", "report_is_output", "output_dotdot", "output_symlink",
                                  "output_hardlink", "report_hardlink", "reference_is_output"])
def test_normalize_never_writes_over_an_input(capsys, monkeypatch, tmp_path, ct, case):
    _no_work(monkeypatch)
    out, extra = tmp_path / "out.nrrd", []
    (tmp_path / "sub").mkdir()
    if case == "report_is_input":
        extra = ["--report", ct]
    elif case == "report_is_output":
        extra = ["--report", out]
    elif case == "output_dotdot":
        out = tmp_path / "sub" / ".." / "in.nrrd"
    elif case == "output_symlink":
        out = tmp_path / "link.nrrd"
        out.symlink_to(ct)
    elif case == "output_hardlink":
        out = tmp_path / "hard.nrrd"
        os.link(ct, out)
    elif case == "report_hardlink":
        os.link(ct, tmp_path / "hard.json")
        extra = ["--report", tmp_path / "hard.json"]
    elif case == "reference_is_output":
        out = tmp_path / "ref.nrrd"
        shutil.copy(ct, out)
        extra = ["--reference", out]
    before = snapshot(ct, *([out] if out.exists() else []))
    code, _, err = cli(capsys, "normalize", ct, "-o", out, *extra, *FAST)
    words = "already another output" if case == "report_is_output" else "never overwrites its inputs"
    check_case(code, err, 2, words, before, [tmp_path])


def test_normalize_output_inside_the_input_dicom_folder(capsys, monkeypatch, tmp_path):
    from test_io import write_dicom_series

    _no_work(monkeypatch)
    folder = tmp_path / "series"
    write_dicom_series(folder, n_slices=4)
    before = snapshot(folder)
    code, _, err = cli(capsys, "normalize", folder, "-o", folder / "out.nrrd", *FAST)
    check_case(code, err, 2, "inside the input folder", before, [tmp_path], absent=[folder / "out.nrrd"])


def test_radiomics_output_over_image_or_segments(capsys, tmp_path, ct):
    seg = tmp_path / "seg.nrrd"
    write_image(seg, (chest() < -500).astype(np.uint8))
    (tmp_path / "seglink.csv").symlink_to(seg)
    before = snapshot(ct, seg)
    for out in (ct, seg, tmp_path / "seglink.csv"):
        code, _, err = cli(capsys, "radiomics", "--image", f"ct={ct}", "--segments", seg, "-o", out)
        check_case(code, err, 2, "never overwrites its inputs", before, [tmp_path])
    # -o x.csv would also write x_comparison.csv: that one is checked too
    comparison_seg = tmp_path / "x_comparison.csv"
    shutil.copy(seg, comparison_seg)
    before = snapshot(ct, seg, comparison_seg)
    code, _, err = cli(capsys, "radiomics", "--image", f"ct={ct}", "--segments", comparison_seg,
                       "-o", tmp_path / "x.csv")
    check_case(code, err, 2, "never overwrites its inputs", before, [tmp_path], absent=[tmp_path / "x.csv"])


def test_emphysema_mask_out_over_the_lung_mask(capsys, tmp_path, ct):
    masks = tmp_path / "masks"
    masks.mkdir()
    lung = masks / "in_lung.nrrd"  # what --mask-out would write for in.nrrd
    write_image(lung, (chest() < -500).astype(np.uint8))
    before = snapshot(ct, lung)
    code, _, err = cli(capsys, "emphysema", ct, "--lung-mask", lung, "--mask-out", masks)
    check_case(code, err, 2, "never overwrites its inputs", before, [tmp_path],
               absent=[masks / "in_emphysema.nrrd"])


def test_evaluate_report_over_an_input(capsys, tmp_path, ct):
    other = write_image(tmp_path / "other.nrrd", chest(seed=1))
    before = snapshot(ct, other)
    code, _, err = cli(capsys, "evaluate", "--target", ct, "--source", other, "--report", ct)
    check_case(code, err, 2, "never overwrites its inputs", before, [tmp_path])
    code, _, err = cli(capsys, "evaluate", "--target", ct, "--source", other, "--out", other)
    check_case(code, err, 2, "never overwrites its inputs", before, [tmp_path])


# ----------------------------------------------------------------------------- 3, 10: full disk, bad paths
FULL_DISK_FORMATS = ["out.nii", "out.nii.gz", "out.nrrd", "out.mha"]
FULL_DISK_SCRIPT = """
import contextlib, io, json, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
from CTNormalizeLib.cli.main import main
runs = {}
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    runs[args[3]] = [code, err.getvalue()]
print(json.dumps(runs))
"""


@pytest.fixture(scope="module")
def full_disk_runs(tmp_path_factory):
    """One child process under ``ulimit -f`` (RLIMIT_FSIZE = 40 kB) runs normalize once per format.

    A full disk, genuinely: each writer's write(2) fails with EFBIG part-way, exactly where ENOSPC
    would. (One process for the four runs: a CLI start costs seconds on a busy machine.)"""
    folder = tmp_path_factory.mktemp("fulldisk")
    ct = write_image(folder / "in.nrrd", chest())
    for name in FULL_DISK_FORMATS:
        (folder / name).write_bytes(b"the output of an earlier run")
    before = snapshot(ct, *[folder / n for n in FULL_DISK_FORMATS])
    runs = [["normalize", str(ct), "-o", str(folder / name), *FAST] for name in FULL_DISK_FORMATS]
    r = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, json.dumps(runs)], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    return folder, before, json.loads(r.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", FULL_DISK_FORMATS)
def test_full_disk_is_exit_4_and_keeps_the_old_output(full_disk_runs, name):
    """SimpleITK's NIfTI writer only prints an error on a failed write; the verified publish must
    catch the short file. NRRD/MHA writers raise, with ITK text: one sentence instead."""
    folder, before, runs = full_disk_runs
    code, err = runs[str(folder / name)]
    check_case(code, err, 4, ["NO_SPACE", str(folder / name)], before, [folder])
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning [")]
    assert len(lines) == 1 and lines[0].startswith("ctnormalize: error [NO_SPACE]"), err  # one sentence


def test_unwritable_output_paths_are_refused_before_the_work(capsys, monkeypatch, tmp_path, ct):
    _no_work(monkeypatch)
    before = snapshot(ct)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [(Path("/proc/ctn-test.nrrd"), "not writable"),
             (afile / "out.nrrd", "is a file, not a folder"),
             (tmp_path / ("n" * 300 + ".nrrd"), "bytes long")]
    for out, words in cases:
        code, _, err = cli(capsys, "normalize", ct, "-o", out, *FAST)
        check_case(code, err, 2, words, before, [tmp_path], absent=[out])
        assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err  # one sentence
    code, _, err = cli(capsys, "normalize", ct, "-o", tmp_path / "o.nrrd", "--report", afile / "r.json", *FAST)
    check_case(code, err, 2, "is a file, not a folder", before, [tmp_path], absent=[tmp_path / "o.nrrd"])


def test_read_only_file_system_is_refused_before_the_work(capsys, monkeypatch, tmp_path, ct):
    """A read-only mount cannot be made here, so the probe's mkdir fails with EROFS as it would."""
    _no_work(monkeypatch)
    import CTNormalizeLib.io.outputs as O

    def erofs(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(k.get("dir")))

    monkeypatch.setattr(O.tempfile, "mkdtemp", erofs)
    before = snapshot(ct)
    code, _, err = cli(capsys, "normalize", ct, "-o", tmp_path / "o.nrrd", *FAST)
    check_case(code, err, 2, "read-only file system", before, [tmp_path], absent=[tmp_path / "o.nrrd"])


def test_too_little_free_space_is_exit_4_before_the_work(capsys, monkeypatch, tmp_path, ct):
    """The free space is measured with shutil.disk_usage; here it reports 1 MB free."""
    _no_work(monkeypatch)
    import CTNormalizeLib.io.outputs as O

    monkeypatch.setattr(O.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    before = snapshot(ct)
    code, _, err = cli(capsys, "normalize", ct, "-o", tmp_path / "o.nii", *FAST)
    check_case(code, err, 4, ["NO_SPACE", "Not enough free space"], before, [tmp_path], absent=[tmp_path / "o.nii"])


# ----------------------------------------------------------------------------- 4: an old output survives a failed run
def test_failure_after_the_write_keeps_the_old_output(capsys, monkeypatch, tmp_path, ct):
    import CTNormalizeLib.io.atomic as A
    from CTNormalizeLib.errors import CancelledError

    out, rep = tmp_path / "out.nrrd", tmp_path / "run.json"
    out.write_bytes(b"old output")
    rep.write_text("old report")
    before = snapshot(ct, out, rep)

    def cancelled(*a, **k):  # SIGTERM arriving while the report is written, after the volume
        raise CancelledError("Cancelled by SIGTERM.")

    monkeypatch.setattr(A, "atomic_write_text", cancelled)
    code, _, err = cli(capsys, "normalize", ct, "-o", out, "--report", rep, *FAST)
    check_case(code, err, 130, "CANCELLED", before, [tmp_path])


def test_missing_folders_created_for_every_output_and_removed_on_failure(capsys, monkeypatch, tmp_path, ct):
    out, rep = tmp_path / "a" / "b" / "out.nrrd", tmp_path / "c" / "run.json"
    before = snapshot(ct)
    code, _, err = cli(capsys, "normalize", ct, "-o", out, "--report", rep, *FAST)
    assert code == 0 and out.is_file() and json.loads(rep.read_text())["method"], err
    assert not leftovers(tmp_path) and snapshot(ct) == before

    import CTNormalizeLib.normalization as N

    def fail(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(N, "execute", fail)
    code, _, err = cli(capsys, "normalize", ct, "-o", tmp_path / "x" / "y" / "o.nrrd",
                       "--report", tmp_path / "z" / "r.json", *FAST)
    check_case(code, err, 4, "memory", before, [tmp_path], absent=[tmp_path / "x", tmp_path / "z"])


def test_study_outputs_never_touch_the_study(capsys, tmp_path):
    from test_readerstudy import make_manifest

    from CTNormalizeLib.readerstudy import ReaderSession, create_study

    manifest = make_manifest(tmp_path / "data", n_cases=2)
    study = tmp_path / "study"
    create_study(manifest, study, "single", 1)
    s = ReaderSession(study, "ann")
    s.record({"score": 3})
    before = snapshot(study, manifest)
    # the manifest and the scans the study was made from too (analyze -o wrote its HTML over them)
    scan = sorted(manifest.parent.glob("*.nrrd"))[0]
    for out in (study / "key.json", study / "study.json", study / "answers" / "report.html",
                study / "items" / "report.html", manifest, scan):
        code, _, err = cli(capsys, "study", "analyze", study, "-o", out)
        check_case(code, err, 2, str(out.name), before, [tmp_path])
    # an HTML name is not enough: the key names the sources (a report named like one of them is refused)
    from CTNormalizeLib.cli.cmd_study import _study_sources

    assert str(manifest.resolve()) in _study_sources(study / "key.json")
    assert str(scan.resolve()) in map(str, _study_sources(study / "key.json"))
    code, _, err = cli(capsys, "study", "create", "--manifest", manifest, "--design", "single", "--seed", "1",
                       "-o", tmp_path / "s2", "--key", manifest)
    check_case(code, err, 2, "never overwrites its inputs", before, [tmp_path], absent=[tmp_path / "s2"])
    # a key file that exists is some study's truth: never replaced (a second study with the same --key overwrote it)
    key = tmp_path / "keys" / "k.json"
    code, _, err = cli(capsys, "study", "create", "--manifest", manifest, "--design", "single", "--seed", "1",
                       "-o", tmp_path / "s4", "--key", key)
    assert code == 0, err
    first = snapshot(key)
    code, _, err = cli(capsys, "study", "create", "--manifest", manifest, "--design", "single", "--seed", "2",
                       "-o", tmp_path / "s5", "--key", key)
    check_case(code, err, 2, ["exists", "never replaced"], first, [tmp_path], absent=[tmp_path / "s5"])
    # the key unblinds the study: never in the folders readers see
    code, _, err = cli(capsys, "study", "create", "--manifest", manifest, "--design", "single", "--seed", "1",
                       "-o", tmp_path / "s3", "--key", tmp_path / "s3" / "items" / "k.json")
    check_case(code, err, 2, "readers see", before, [tmp_path], absent=[tmp_path / "s3"])


def test_mha_output_reads_back_as_ct(tmp_path, ct):
    """A .mha written by normalize is a valid input again (MetaIO's own Modality field was read as
    'MET_MOD_UNKNOWN' and refused as not CT)."""
    from CTNormalizeLib.io import read_volume, write_volume

    vol = read_volume(ct)
    vol.meta["Modality"] = "CT"
    write_volume(vol.with_array(vol.hu), tmp_path / "o.mha")
    assert read_volume(tmp_path / "o.mha").meta.get("Modality") in (None, "CT")


def test_atomic_temp_names_fit_long_output_names(tmp_path):
    from CTNormalizeLib.io import atomic_write_text

    name = "r" * 240 + ".json"
    atomic_write_text(tmp_path / name, "{}")
    assert (tmp_path / name).read_text() == "{}" and not leftovers(tmp_path)


def test_a_card_that_breaks_the_contract_is_never_published(tmp_path):
    """The decision scripts and the training run publish cards through write_card: a card the registry would
    refuse leaves the card already there byte-identical and no temp file."""
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.models.registry import read_package, write_card

    shipped = REPO / "Resources" / "Models" / "ctn-denoise-v2c"
    pkg = tmp_path / "pkg"
    shutil.copytree(shipped, pkg)
    card_path = pkg / "card.json"
    before = card_path.read_bytes()
    card = json.loads(before)
    with pytest.raises(BadInputError, match="sha256"):
        write_card(card_path, dict(card, sha256="not a digest"))
    with pytest.raises(BadInputError, match="training_data"):
        write_card(card_path, {k: v for k, v in card.items() if k != "training_data"})
    assert card_path.read_bytes() == before and not leftovers(pkg)
    write_card(card_path, dict(card, description="changed"))
    assert read_package(pkg).card["description"] == "changed" and not leftovers(pkg)


# ----------------------------------------------------------------------------- DICOM series and cohorts
def _tree(folder: Path) -> dict:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_dicom_series_output_replaced_only_by_a_complete_run(capsys, monkeypatch, tmp_path, ct):
    """A DICOM series (a folder) and the report are staged and published together: a run that fails
    after writing the series keeps the earlier series; a run that succeeds replaces it."""
    import CTNormalizeLib.io.atomic as A
    from CTNormalizeLib.errors import CancelledError

    out, rep = tmp_path / "series", tmp_path / "run.json"
    dicom = ["--output-format", "dicom", "--report", rep, *FAST]
    code, _, err = cli(capsys, "normalize", ct, "-o", out, *dicom)
    assert code == 0 and len(list(out.glob("*.dcm"))) == 12, err
    first = _tree(out)
    before = snapshot(ct, out, rep)

    real = A.atomic_write_text

    def cancelled(*a, **k):
        raise CancelledError("Cancelled by SIGTERM.")

    monkeypatch.setattr(A, "atomic_write_text", cancelled)
    code, _, err = cli(capsys, "normalize", ct, "-o", out, *dicom)
    check_case(code, err, 130, "CANCELLED", before, [tmp_path])
    assert _tree(out) == first

    monkeypatch.setattr(A, "atomic_write_text", real)
    code, _, err = cli(capsys, "normalize", ct, "-o", out, *dicom)
    assert code == 0, err
    assert _tree(out).keys() == first.keys() and _tree(out) != first  # new UIDs: a new series
    assert not leftovers(tmp_path)


def test_dicom_outputs_inside_the_input_series_are_refused(capsys, tmp_path):
    from test_io import write_dicom_series

    folder = tmp_path / "series"
    write_dicom_series(folder, n_slices=4)
    before = snapshot(folder)
    code, _, err = cli(capsys, "normalize", folder, "-o", folder / "norm", "--output-format", "dicom", *FAST)
    check_case(code, err, 2, "inside the input folder", before, [tmp_path], absent=[folder / "norm"])
    seg = next(folder.glob("*.dcm")).with_name("lungs.seg.dcm")
    code, _, err = cli(capsys, "emphysema", folder, "--dicom-seg", seg)
    check_case(code, err, 2, "inside the input folder", before, [tmp_path], absent=[seg])


def test_batch_output_folder_checked_before_any_case(capsys, tmp_path, ct):
    from test_io import write_dicom_series

    folder = tmp_path / "series"
    write_dicom_series(folder, n_slices=4)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"case,input\na,{ct}\nb,{folder}\n")
    before = snapshot(ct, folder, manifest)
    for out, words in ((folder, "is one of its inputs"), (tmp_path, "holds the input"),
                       (folder / "out", "inside the input folder"),
                       (Path("/proc/ctn-batch"), "not writable")):
        code, _, err = cli(capsys, "batch", manifest, "-o", out, "--target", "kernel=smooth", "--progress", "none")
        check_case(code, err, 2, words, before, [tmp_path])


# ----------------------------------------------------------------------------- interrupted training
def test_an_interrupted_training_run_publishes_nothing_and_resumes_exactly(tmp_path, monkeypatch):
    """A run killed mid-step or mid-checkpoint leaves its last whole checkpoint and no package;
    running the command again finishes exactly as an uninterrupted run."""
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    from CTNormalizeLib.cli.main import main
    from CTNormalizeLib.train import checkpoint, denoiser

    rng = np.random.default_rng(0)
    from scipy import ndimage as ndi

    vol = (ndi.gaussian_filter(rng.normal(0, 1, (3, 40, 40)), 3) * 3000.0 - 500.0).astype(np.float32)
    bank = tmp_path / "bank.npz"
    np.savez_compressed(bank, target_0=vol, index_json=np.frombuffer(json.dumps({"targets": 1}).encode(), np.uint8))
    small = dict(batch=2, patch=32, width=8, head=4, blocks=1, warmup=1, checkpoint_every=2)
    real_cfg = denoiser.DenoiseConfig
    monkeypatch.setattr(denoiser, "DenoiseConfig", lambda **kw: real_cfg(**{**small, **kw}))
    args = ["train", "--recipe", "denoise", "--bank", str(bank), "--steps", "6"]
    assert main([*args, "-o", str(tmp_path / "whole")]) == 0

    run = tmp_path / "cut"
    real_step, calls = denoiser.train_step, {"n": 0}

    def dies_at_step_5(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(denoiser, "train_step", dies_at_step_5)
    assert main([*args, "-o", str(run)]) != 0  # Ctrl-C: "cancelled", non-zero exit
    assert not (run / "package").exists()  # nothing published
    state = json.loads((run / "checkpoint" / "state.json").read_text())["state"]
    assert state["step"] == 4
    monkeypatch.setattr(denoiser, "train_step", real_step)

    # killed while writing the step-6 checkpoint: the step-4 one stays whole
    real_save = checkpoint._save_tensors

    def dies_in_optim(tensors, path):
        if path.name == "optim.safetensors":
            raise KeyboardInterrupt
        return real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "_save_tensors", dies_in_optim)
    assert main([*args, "-o", str(run)]) != 0
    monkeypatch.setattr(checkpoint, "_save_tensors", real_save)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["state"]["step"] == 4
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temp folders left
    assert not (run / "package").exists()

    assert main([*args, "-o", str(run)]) == 0
    a = load_file(str(tmp_path / "whole" / "package" / "ctn-denoise-v1" / "model.safetensors"))
    b = load_file(str(run / "package" / "ctn-denoise-v1" / "model.safetensors"))
    import torch

    assert all(torch.equal(a[k], b[k]) for k in a)
