"""The ``normalize`` command's process protocol (DESIGN.md section 4), through a real child process."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from reliability import chest

SRC = "kernel=sharp,dose=0.25,thickness=2"


def _write(path: Path, arr: np.ndarray, spacing=(0.8, 0.8, 2.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "CTNormalizeLib", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def _events(stdout: str):
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]  # every stdout line must be JSON


@pytest.fixture
def small_ct(tmp_path):
    return _write(tmp_path / "in.nrrd", chest())


def test_json_events_done_and_input_untouched(small_ct, tmp_path):
    before = _sha(small_ct)
    out = tmp_path / "out.nrrd"
    r = _run(["normalize", str(small_ct), "-o", str(out), "--source", SRC,
              "--target", "emphysema-reference", "--progress", "json", "--report", str(tmp_path / "r.json")])
    assert r.returncode == 0, r.stderr
    ev = _events(r.stdout)
    assert ev[0]["event"] == "started" and ev[0]["steps"] >= 1 and "method" in ev[0] and "device" in ev[0]
    assert ev[-1]["event"] == "done"
    assert Path(ev[-1]["output"]) == out.resolve()
    prog = [e for e in ev if e["event"] == "progress"]
    assert prog and all(0 <= e["fraction"] <= 1 and "stage" in e and "eta_s" in e for e in prog)
    fr = [e["fraction"] for e in prog]
    assert fr == sorted(fr)
    steps = [e["step"] for e in prog]
    assert steps == sorted(steps) and steps[0] == 1 and set(steps) == set(range(1, ev[0]["steps"] + 1))
    rep = ev[-1]["report"]
    assert rep["plan"]["target"]["kernel"] == "smooth" and rep["plan"]["source"]["kernel"] == "sharp"
    assert rep["plan"]["source"]["sources"]["kernel"]["source"] == "user"
    assert json.loads((tmp_path / "r.json").read_text())["method"] == rep["method"]
    assert _sha(small_ct) == before
    img = sitk.ReadImage(str(out))
    assert img.GetSpacing()[2] == pytest.approx(1.0)  # 2 mm -> 1 mm target grid
    assert img.GetMetaData("ctnormalize_texture") == rep["texture"] == "clean"  # read back by quantification
    assert img.GetSpacing()[0] == pytest.approx(0.8)
    assert not list(tmp_path.glob("*.tmp*"))


def test_bar_mode_prints_no_json(small_ct, tmp_path):
    r = _run(["normalize", str(small_ct), "-o", str(tmp_path / "o.nii.gz"), "--source", SRC,
              "--target", "kernel=standard", "--progress", "none"])
    assert r.returncode == 0, r.stderr
    assert "Wrote" in r.stdout and "clean texture" in r.stdout
    assert "method " in r.stdout  # auto says what it took, and why, without --progress json
    # NIfTI keeps no header text: the run says the provenance is not stored with the output
    assert "NIFTI_DROPS_PROVENANCE" in r.stderr
    # kernel-only target keeps the source dose and thickness
    assert sitk.ReadImage(str(tmp_path / "o.nii.gz")).GetSpacing()[2] == pytest.approx(2.0)
    r = _run(["normalize", str(small_ct), "-o", str(tmp_path / "o.nrrd"), "--source", SRC,
              "--target", "kernel=standard", "--progress", "none"])
    assert r.returncode == 0 and "NIFTI_DROPS_PROVENANCE" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["MISSING", "--target", "emphysema-reference"], "BAD_INPUT", "MISSING"),
        (["IN", "--target", "no-such-preset"], "BAD_INPUT", "preset"),
        (["IN", "--target", "kernel=blurry"], "BAD_INPUT", "Unknown kernel"),
        (["IN", "--target", "emphysema-reference", "--method", "magic"], "BAD_INPUT", "magic"),
        (["IN", "--target", "kernel=smooth,dose=-1"], "BAD_INPUT", "physical range"),
    ],
)
def test_bad_input_error_event_and_exit_2(small_ct, tmp_path, args, code, needle):
    args = [str(tmp_path / "missing.nrrd") if a == "MISSING" else str(small_ct) if a == "IN" else a for a in args]
    before = _sha(small_ct)
    out = tmp_path / "o.nrrd"
    r = _run(["normalize", args[0], "-o", str(out), "--source", SRC, *args[1:], "--progress", "json"])
    assert r.returncode == 2, (r.stdout, r.stderr)
    ev = _events(r.stdout)
    assert ev[-1]["event"] == "error" and ev[-1]["code"] == code
    assert needle.lower() in ev[-1]["message"].lower()
    assert needle.lower() in r.stderr.lower()
    assert not out.exists()
    assert _sha(small_ct) == before


def test_output_equal_to_input_refused(small_ct):
    before = _sha(small_ct)
    r = _run(["normalize", str(small_ct), "-o", str(small_ct), "--source", SRC, "--target", "emphysema-reference"])
    assert r.returncode == 2 and "input" in r.stderr.lower()
    assert _sha(small_ct) == before


def test_non_ct_refused(brain1_path, tmp_path):
    r = _run(["normalize", str(brain1_path), "-o", str(tmp_path / "o.nrrd"), "--source", SRC,
              "--target", "emphysema-reference", "--progress", "json"])
    assert r.returncode == 2
    assert _events(r.stdout)[-1]["code"] == "NOT_CT"
    assert not (tmp_path / "o.nrrd").exists()


def test_nan_input_refused(tmp_path):
    arr = chest()
    arr[3, 10, 10] = np.nan
    src = _write(tmp_path / "nan.nrrd", arr)
    r = _run(["normalize", str(src), "-o", str(tmp_path / "o.nrrd"), "--source", SRC, "--target", "emphysema-reference"])
    assert r.returncode == 2 and "nan" in r.stderr.lower()


@pytest.mark.parametrize("method", ["auto", "denoise"])  # the learned model; the classical NLM path
def test_sigterm_cancels_fast_and_leaves_nothing(tmp_path, method):
    big = _write(tmp_path / "big.nrrd", chest((80, 384, 384), seed=1), spacing=(0.7, 0.7, 1.0))
    out = tmp_path / "out.nrrd"
    proc = subprocess.Popen(
        [sys.executable, "-m", "CTNormalizeLib", "normalize", str(big), "-o", str(out),
         "--source", "kernel=very-sharp,dose=0.1,thickness=1", "--target", "emphysema-reference",
         "--method", method, "--progress", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "started", first
    time.sleep(1.0)
    assert proc.poll() is None, "run finished before it could be cancelled; make the input bigger"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 130, err
    ev = _events(rest)
    assert ev[-1]["event"] == "error" and ev[-1]["code"] == "CANCELLED"
    assert elapsed < 1.5, f"cancel took {elapsed:.1f} s"  # README: about a second
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.nrrd"]


def test_output_is_whole_hu_compressed_by_default_and_float32_on_request(small_ct, tmp_path):
    args = ["--source", SRC, "--target", "kernel=smooth", "--method", "mtf_ratio", "--progress", "none"]
    a, b = tmp_path / "int.nrrd", tmp_path / "float.nrrd"
    for out, more in ((a, []), (b, ["--output-type", "float32"])):
        r = _run(["normalize", str(small_ct), "-o", str(out), *args, *more, "--report", str(out) + ".json"])
        assert r.returncode == 0, r.stderr
    # the run report says what the file stores
    assert [json.loads(Path(str(p) + ".json").read_text())["output_type"] for p in (a, b)] == ["int16", "float32"]
    ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert ia.GetPixelID() == sitk.sitkInt16 and ib.GetPixelID() == sitk.sitkFloat32
    va, vb = sitk.GetArrayFromImage(ia), sitk.GetArrayFromImage(ib)
    assert not np.array_equal(vb, np.round(vb))  # the float output has fractions: the int16 one rounded them
    assert np.abs(va - vb).max() <= 0.5 + 1e-3
    assert a.stat().st_size < 0.5 * b.stat().st_size  # int16 and compressed


def test_output_type_falls_back_to_float32_with_a_warning():
    from CTNormalizeLib.io.write import output_type

    assert output_type(np.array([-1000.4, 3000.6]), "int16") == ("int16", None)
    for hu, why in ((np.array([0.0, 40000.0]), "beyond int16"), (np.array([0.0, np.nan]), "not finite")):
        dtype, warning = output_type(hu, "int16")
        assert dtype == "float32" and warning["code"] == "OUTPUT_FLOAT32" and why in warning["message"]
    assert output_type(np.array([0.0, 40000.0]), "float32") == ("float32", None)


def test_a_usage_error_is_a_json_error_event_too(small_ct, tmp_path):
    """A process reading JSON lines (the Slicer module) learns why, as for every other refusal."""
    r = _run(["normalize", str(small_ct), "-o", str(tmp_path / "o.nrrd"), "--target", "kernel=smooth",
              "--output-type", "int8", "--progress", "json"])
    assert r.returncode == 2 and "usage:" in r.stderr
    ev = _events(r.stdout)
    assert len(ev) == 1 and ev[0]["event"] == "error" and ev[0]["code"] == "BAD_INPUT" and "int8" in ev[0]["message"]
    r = _run(["normalize", str(small_ct), "-o", str(tmp_path / "o.nrrd"), "--output-type", "int8"])
    assert r.returncode == 2 and r.stdout == ""  # without --progress json, stdout stays empty


def test_a_kernel_only_output_is_marked_as_keeping_the_source_noise(small_ct, tmp_path):
    """mtf_ratio neither denoises nor adds the target's noise: its output is not a clean-texture scan, so
    quantifying it must not warn that its emphysema index reads low (it reads higher: it was sharpened)."""
    from CTNormalizeLib.contracts.report import SOURCE_TEXTURE

    out = tmp_path / "k.nrrd"
    r = _run(["normalize", str(small_ct), "-o", str(out), "--source", "kernel=smooth,dose=0.25,thickness=2",
              "--target", "kernel=sharp", "--method", "mtf_ratio", "--progress", "json"])
    assert r.returncode == 0, r.stderr
    rep = _events(r.stdout)[-1]["report"]
    assert rep["texture"] == SOURCE_TEXTURE and rep["changes"] == ["kernel"]
    assert sitk.ReadImage(str(out)).GetMetaData("ctnormalize_texture") == SOURCE_TEXTURE
    e = _run(["emphysema", str(out), "--json"])
    assert e.returncode == 0, e.stderr
    assert "CLEAN_TEXTURE_INPUT" not in e.stdout + e.stderr
    # the line a terminal user reads says so too (it said "clean texture", the request's default)
    r = _run(["normalize", str(small_ct), "-o", str(tmp_path / "k2.nrrd"), "--source", "kernel=smooth,dose=0.25,thickness=2",
              "--target", "kernel=sharp", "--method", "mtf_ratio"])
    assert r.returncode == 0 and "mtf_ratio, source texture" in r.stdout, r.stdout


def test_frequency_decomposition_has_the_target_texture_whatever_was_asked(small_ct):
    """Its bands are scaled to the target's energies, noise included: marked target, and a clean request says so."""
    from CTNormalizeLib import read_volume
    from CTNormalizeLib.normalization import normalize

    out = normalize(read_volume(str(small_ct)), source=SRC, target="kernel=smooth,dose=1",
                    method="frequency_decomposition", texture="clean")
    assert out.texture == "target" and out.report().texture == "target"
    assert [w for w in out.warnings if w["code"] == "TEXTURE_OF_THE_METHOD"]


def test_a_partial_method_says_why_the_noise_differs_when_no_dose_was_asked(small_ct):
    """Target kernel=smooth without a dose: the noise level is the target's, and only the clean texture
    asks for it removed; the warning said the noise 'still differs from the target'."""
    from CTNormalizeLib import read_volume
    from CTNormalizeLib.normalization import normalize

    vol = read_volume(str(small_ct))
    (w,) = [w for w in normalize(vol, source=SRC, target="kernel=smooth", method="mtf_ratio").warnings
            if w["code"] == "PARTIAL_NORMALIZATION"]
    assert "clean texture asks for it removed" in w["message"]
    (w,) = [w for w in normalize(vol, source=SRC, target="kernel=smooth,dose=1", method="mtf_ratio").warnings
            if w["code"] == "PARTIAL_NORMALIZATION"]
    assert "noise level" in w["message"] and "clean texture" not in w["message"]


def test_no_output_voxel_is_below_what_a_scanner_stores(tmp_path):
    """Sharpening overshoot at air edges went below -1024 HU (-1127 on a lung2 crop): values no target scan
    holds, which a radiomics minimum reads. The output is floored at -1024 HU (or at the input's minimum where
    the input was stored without a floor); pixel padding far below (-3024 outside the field of view) stays
    padding while the scan's own voxels are floored."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent))
    from reliability import chest

    from CTNormalizeLib import Volume
    from CTNormalizeLib.normalization import HU_FLOOR, normalize

    def sharpened(hu):
        return normalize(Volume(hu, (2.0, 0.8, 0.8), meta={"Modality": "CT"}),
                         source="kernel=smooth,dose=1,thickness=2", target="kernel=very-sharp,dose=1", method="mtf_ratio")

    raw = chest((6, 96, 96), seed=3).astype(np.float32)
    floored = np.maximum(raw, np.float32(HU_FLOOR))  # as a scanner stores it
    kept = floored.copy()
    out = sharpened(floored)
    assert float(out.volume.hu.min()) == HU_FLOOR
    assert out.report().qc["below_floor_fraction"] > 0.001  # the sharpening did overshoot, and was floored
    assert np.array_equal(floored, kept)  # the input is not changed
    loose = sharpened(raw)  # stored without a floor: the input's own minimum is the floor
    assert float(loose.volume.hu.min()) >= float(raw.min()) and float(raw.min()) < HU_FLOOR - 20
    padded = floored.copy()
    padded[:, :, :10] = -3024.0  # outside the field of view: 10 % of the voxels
    out = sharpened(padded).volume.hu
    inside = out[:, :, 14:]
    assert float(inside.min()) == HU_FLOOR  # the scan's voxels are floored as without padding
    assert np.all(out[:, :, :5] <= -3024.0 + 50.0) and float(out.min()) >= -3024.0  # the padding stays padding
