"""Cohorts on Dask: batch with a corrupt case, resume, a dying worker, tables, characterize, spread."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from reliability import chest

TARGET = "kernel=smooth,dose=1"

BATCH_SHAPE = (8, 96, 96)


def _run(args, timeout=240):
    return subprocess.run([sys.executable, "-m", "CTNormalizeLib", *args], capture_output=True, text=True,
                          timeout=timeout)


def _write(path: Path, arr: np.ndarray, spacing=(1.2, 1.2, 2.0)) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def _rows(path: Path) -> dict:
    with open(path, newline="") as fh:
        return {r["case"]: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, pyradiomics_data) -> Path:
    """Three cases: a real DICOM series (lung1 slices), a NRRD chest, a corrupt NRRD."""
    from CTNormalizeLib import testdata

    d = tmp_path_factory.mktemp("cohort")
    testdata.lung1_series(d / "lung1", slices=6)
    _write(d / "chest.nrrd", chest(BATCH_SHAPE))
    _write(d / "chest_label.nrrd", np.ones(BATCH_SHAPE, np.uint8))  # a mask: not a case under --input-dir
    (d / "corrupt.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 9 9 9\nencoding: raw\n\n" + b"\0" * 40)
    (d / "manifest.csv").write_text(
        "case,input,source,site\n"
        "lung1,lung1,,A\n"
        "chest,chest.nrrd,\"kernel=sharp,dose=0.5,thickness=2\",B\n"
        "broken,corrupt.nrrd,,C\n")
    return d


def test_batch_two_workers_corrupt_case_then_resume(cohort, tmp_path):
    out = tmp_path / "out"
    args = ["batch", str(cohort / "manifest.csv"), "-o", str(out), "--target", TARGET, "--method", "mtf_ratio",
            "--workers", "2", "--emphysema", "--progress", "json"]
    r = _run(args)
    assert r.returncode == 2, r.stderr  # every failure is bad input
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]  # stdout: JSON only
    assert events[0] == {"event": "started", "cases": 3, "workers": 2, "slots": 2}
    assert events[-1]["event"] == "done" and events[-1]["summary"]["failed_cases"] == ["broken"]
    rows = _rows(out / "batch.csv")
    assert [rows[c]["status"] for c in ("lung1", "chest", "broken")] == ["done", "done", "failed"]
    assert rows["broken"]["error"].startswith("BAD_INPUT: Cannot read") and "corrupt.nrrd" in rows["broken"]["error"]
    assert "\n" not in rows["broken"]["error"]
    assert rows["lung1"]["site"] == "A" and rows["chest"]["source_spec"].startswith("kernel=sharp")
    for case in ("lung1", "chest"):
        assert Path(rows[case]["output"]).is_file() and float(rows[case]["seconds"]) > 0
    emph = list(csv.DictReader(open(out / "emphysema.csv")))
    laa = {r["case"]: r for r in emph if r["region"] == "lungs" and r["measure"] == "laa_percent"}
    assert set(laa) == {"lung1", "chest"}
    for r in laa.values():
        assert float(r["difference"]) == pytest.approx(float(r["normalized"]) - float(r["original"]))
    page = (out / "cohort.html").read_text()
    assert "before and after" in page and "Kruskal" in page and "broken" in page
    assert page.count("data:image/png;base64,") >= 4 and "<script" not in page and "http://" not in page
    mtimes = {c: os.stat(rows[c]["output"]).st_mtime_ns for c in ("lung1", "chest")}

    (out / "cohort.html").unlink()
    r2 = _run(args + ["--no-report"])
    assert r2.returncode == 2, r2.stderr
    assert not (out / "cohort.html").exists()
    rows2 = _rows(out / "batch.csv")
    assert [rows2[c]["status"] for c in ("lung1", "chest", "broken")] == ["skipped", "skipped", "failed"]
    done = json.loads(r2.stdout.splitlines()[-1])
    assert done["summary"]["skipped"] == 2 and done["summary"]["done"] == 0
    assert {c: os.stat(rows[c]["output"]).st_mtime_ns for c in ("lung1", "chest")} == mtimes
    assert [rows2[c]["seconds"] for c in ("lung1", "chest")] == [rows[c]["seconds"] for c in ("lung1", "chest")]
    assert len(list(csv.DictReader(open(out / "emphysema.csv")))) == len(emph)  # the skipped cases' results


def test_resume_rules_in_process(tmp_path):
    """Skipped only with the same input, plan and engine version, and the output still there."""
    from CTNormalizeLib.cohort import case as case_mod
    from CTNormalizeLib.cohort.case import BatchSettings, run_case
    from CTNormalizeLib.cohort.manifest import Case

    ct = _write(tmp_path / "ct.nrrd", chest(BATCH_SHAPE, seed=1))
    c = Case("c1", str(ct), "c1", source="kernel=sharp,dose=0.5,thickness=2")
    s = BatchSettings(target=TARGET, method="mtf_ratio", measure=False)
    out = str(tmp_path / "out")
    assert run_case(c, s, out)["status"] == "done"
    assert run_case(c, s, out)["status"] == "skipped"
    assert run_case(c, BatchSettings(target="kernel=standard,dose=1", method="mtf_ratio", measure=False),
                    out)["status"] == "done"  # another plan
    assert run_case(c, s, out)["status"] == "done"  # the record now holds the other plan
    _write(ct, chest(BATCH_SHAPE, seed=2))
    assert run_case(c, s, out)["status"] == "done"  # another input
    old = case_mod.__version__
    try:
        case_mod.__version__ = "0.0.0-other"
        assert run_case(c, s, out)["status"] == "done"  # another engine version
    finally:
        case_mod.__version__ = old
    assert run_case(c, s, out)["status"] == "done"
    case_mod.output_path(out, c, s).unlink()
    assert run_case(c, s, out)["status"] == "done"  # output gone
    case_mod.output_path(out, c, s).unlink()
    assert run_case(c, s, out, run_id="run-1")["status"] == "done"
    assert run_case(c, s, out, run_id="run-1")["status"] == "done"  # computed again within one run
    assert run_case(c, s, out, run_id="run-2")["status"] == "skipped"
    bad = run_case(Case("c2", str(tmp_path / "missing.nrrd"), "c2"), s, out)
    assert bad["status"] == "failed" and bad["error"].startswith("BAD_INPUT: Input not found")


def die_once_marker(case):
    """A task that kills its worker process (and counts its attempts in a file)."""
    marker = Path(case.input)
    marker.write_text(marker.read_text() + "x" if marker.exists() else "x")
    if case.name == "dies":
        os._exit(3)
    return {"case": case.name, "status": "done", "seconds": 0.0}


def test_dead_worker_retried_once_then_failed(tmp_path):
    from CTNormalizeLib.cohort.batch import run_cases
    from CTNormalizeLib.cohort.manifest import Case

    cases = [Case("ok", str(tmp_path / "ok"), "ok"), Case("dies", str(tmp_path / "dies"), "dies")]
    events = []
    recs = run_cases(cases, die_once_marker, workers=2, on_event=events.append)
    assert recs[0]["status"] == "done"
    assert recs[1]["status"] == "failed" and recs[1]["error"].startswith("WORKER_DIED: tried twice")
    assert (tmp_path / "dies").read_text() == "xx"
    # "ok" may run again: a result held by the worker that then died is recomputed by Dask
    assert (tmp_path / "ok").read_text() in ("x", "xx")
    # a case queued on the dying worker is retried too, and then runs
    assert "dies" in [e["case"] for e in events if e["event"] == "retry"]


def test_radiomics_side_by_side(tmp_path):
    from CTNormalizeLib.cohort.case import BatchSettings, run_case
    from CTNormalizeLib.cohort.manifest import Case
    from CTNormalizeLib.cohort.tables import write_tables

    arr = chest((10, 64, 64), seed=3)
    ct = _write(tmp_path / "ct.nrrd", arr)
    seg = np.zeros(arr.shape, np.uint8)
    seg[2:8, 20:44, 20:44] = 1
    _write(tmp_path / "seg.nrrd", seg)
    c = Case("r1", str(ct), "r1", source="kernel=sharp,dose=0.5,thickness=2", segments=str(tmp_path / "seg.nrrd"),
             group="g1")
    rec = run_case(c, BatchSettings(target=TARGET, method="mtf_ratio", radiomics=True, measure=False),
                   str(tmp_path / "out"))
    assert rec["status"] == "done", rec.get("error")
    # a kernel-only method's output keeps the source's noise: not marked as a clean-texture scan
    assert sitk.ReadImage(rec["output"]).GetMetaData("ctnormalize_texture") == "source"
    files = write_tables(tmp_path / "out", [rec])
    rows = list(csv.DictReader(open(files["radiomics"])))
    mean = [r for r in rows if r["feature"] == "original_firstorder_Mean"]
    assert len(mean) == 1 and mean[0]["group"] == "g1" and mean[0]["segment"] == "label_1"
    a, b = float(mean[0]["original"]), float(mean[0]["normalized"])
    assert float(mean[0]["difference"]) == pytest.approx(b - a)
    assert a == pytest.approx(float(arr[2:8, 20:44, 20:44].mean()), abs=2.0)


def test_characterize_folder(cohort, tmp_path):
    r = _run(["characterize", str(cohort), "-o", str(tmp_path / "before.html"), "--workers", "2",
              "--json", str(tmp_path / "before.json"), "--progress", "none"])
    assert r.returncode == 2, r.stderr  # the corrupt file is one failed case
    data = json.loads((tmp_path / "before.json").read_text())["cases"]
    by = {Path(c["input"]).name: c for c in data}
    assert by["corrupt.nrrd"]["status"] == "failed"
    lung = by["lung1"]["before"]
    assert lung["vendor"] == "SIEMENS" and lung["kernel_tag"] == "B31f" and lung["kernel_class_tag"] == "standard"
    assert lung["noise_tissue_hu"] > 0 and lung["thickness_mm"] == pytest.approx(5.0)
    page = (tmp_path / "before.html").read_text()
    assert "characterization" in page and "after normalization" not in page
    # its "how it was measured" notes describe what it did: no normalized scan, no emphysema or radiomics
    assert "normalized scan" not in page and "pyradiomics with the CT preset" not in page and "LAA%" not in page


def test_manifest_and_folder_rules(cohort, tmp_path):
    from CTNormalizeLib.cohort.manifest import find_inputs, read_manifest
    from CTNormalizeLib.errors import BadInputError

    (tmp_path / "m.csv").write_text("name,path\na,b\n")
    with pytest.raises(BadInputError, match="case,input"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "d.csv").write_text("case,input\na,x.nrrd\na,y.nrrd\n")
    with pytest.raises(BadInputError, match="twice"):
        read_manifest(tmp_path / "d.csv")
    (tmp_path / "s.csv").write_text("case,input,roi\nA b/c,x.nrrd,seg.nrrd\nA_b_c,y.nrrd,\n")
    cases = read_manifest(tmp_path / "s.csv", segments_column="roi")
    assert [c.folder for c in cases] == ["A_b_c", "A_b_c_2"]
    assert cases[0].segments == str((tmp_path / "seg.nrrd").resolve()) and cases[1].segments is None
    names = sorted(c.name for c in find_inputs(cohort))
    assert names == ["chest.nrrd", "corrupt.nrrd", "lung1"]
    # masks named by a prefix, as `ctnormalize simulate` writes them (mask_lung.nrrd), are masks too
    from CTNormalizeLib.cohort.manifest import _is_volume_file, load_cases

    assert not any(_is_volume_file(Path(n)) for n in ("mask_lung.nrrd", "Label-1.nii.gz", "seg_tumour.mha"))
    assert all(_is_volume_file(Path(n)) for n in ("masked_scan.nrrd", "labelled.nrrd", "chest.nrrd"))
    # a folder given to characterize leaves out an earlier batch's case folders, as batch does
    folder = tmp_path / "cohort2"
    (folder / "out" / "cases" / "c1").mkdir(parents=True)
    _write(folder / "scan.nrrd", chest(BATCH_SHAPE))
    _write(folder / "out" / "cases" / "c1" / "normalized.nrrd", chest(BATCH_SHAPE))
    (folder / "out" / "cases" / "c1" / "record.json").write_text("{}")
    assert [c.name for c in load_cases(folder)] == ["scan.nrrd"]
    r = _run(["batch", "-o", str(tmp_path / "o"), "--target", TARGET])
    assert r.returncode == 2 and "manifest" in r.stderr


def test_spread_numbers():
    from CTNormalizeLib.cohort.stats import spread

    s = spread({"a": [1.0, 1.0, 1.2], "b": [3.0, 3.0, 2.8]})
    means = [np.mean([1.0, 1.0, 1.2]), np.mean([3.0, 3.0, 2.8])]
    assert s["cv"] == pytest.approx(np.std(means, ddof=1) / np.mean(means))
    assert s["p"] < 0.1 and s["groups"] == 2 and s["n"] == 6
    same = spread({"a": [2.0, 2.0], "b": [2.0, 2.0]})
    assert same["cv"] == 0.0 and same["p"] is None
    assert spread({"a": [1.0, 2.0]})["cv"] is None
    # one case per group: no p (Kruskal-Wallis gave 0.32 for any three groups of one case)
    single = spread({"a": [1.0], "b": [5.0], "c": [9.0]})
    assert single["p"] is None and single["cv"] is not None
    # a position on the HU scale (Perc15, a mean HU): a CV depends on where zero is, so the SD of the means stands in
    perc15 = spread({"a": [-900.0, -910.0], "b": [-880.0, -890.0]}, position=True)
    assert perc15["cv"] is None and perc15["sd"] == pytest.approx(np.std([-905.0, -885.0], ddof=1))


def test_the_cohort_report_gives_hu_positions_an_sd_not_a_cv():
    """cohort.html gave firstorder_Mean a 'CV of group means' (0.946 -> 0.902), which moves with the HU scale's zero."""
    from CTNormalizeLib.cohort.report import _spread_rows

    def rec(group, mean_before, mean_after, perc15):
        rows = [{"feature": "original_firstorder_Mean", "original": mean_before, "normalized": mean_after},
                {"feature": "original_firstorder_Entropy", "original": 3.0 + mean_before / 100, "normalized": 3.0}]
        return {"case": group + str(mean_before), "group": group, "status": "done", "before": {}, "after": {},
                "radiomics": {"rows": rows},
                "emphysema": {"original": {"perc15_hu": perc15, "laa_percent": 5.0},
                              "normalized": {"perc15_hu": perc15 + 5, "laa_percent": 4.0}}}

    rows = {r["label"]: r for r in _spread_rows([rec("A", 40.0, 42.0, -910.0), rec("A", 44.0, 43.0, -905.0),
                                                 rec("B", 60.0, 45.0, -880.0), rec("B", 64.0, 44.0, -885.0)], True)}
    assert rows["firstorder_Mean"]["cv_before"].startswith("SD 14.1") and rows["firstorder_Mean"]["unit"] == "HU"
    assert rows["Perc15"]["cv_before"].startswith("SD ") and rows["Perc15"]["cv_before"].endswith(" HU")
    assert not rows["firstorder_Entropy"]["cv_before"].startswith("SD")  # a ratio-scale feature keeps its CV
    assert rows["firstorder_Mean"]["cv_class"] == "good"  # the means drew together


def test_case_outputs_are_whole_hu_and_measured_as_written(tmp_path):
    """The default output type is int16; the cohort's measurements are of the values in the file; float32 is a
    different plan (the case is redone)."""
    import SimpleITK as sitk

    from CTNormalizeLib.cohort import case as case_mod
    from CTNormalizeLib.cohort.case import BatchSettings, run_case
    from CTNormalizeLib.cohort.manifest import Case

    ct = _write(tmp_path / "ct.nrrd", chest(BATCH_SHAPE, seed=1))
    c = Case("c1", str(ct), "c1", source="kernel=sharp,dose=0.5,thickness=2")
    out = str(tmp_path / "out")
    s = BatchSettings(target=TARGET, method="mtf_ratio", measure=False, emphysema=True)
    rec = run_case(c, s, out)
    path = case_mod.output_path(out, c, s)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkInt16
    assert rec["report"]["output_type"] == "int16"  # the run report says what the file stores
    from CTNormalizeLib.io import read_volume
    from CTNormalizeLib.quantify import emphysema_index

    assert rec["emphysema"]["normalized"] == emphysema_index(read_volume(path), threshold=-950.0).to_dict()
    f = BatchSettings(target=TARGET, method="mtf_ratio", measure=False, emphysema=True, output_type="float32")
    rec = run_case(c, f, out)
    assert rec["status"] == "done" and rec["report"]["output_type"] == "float32"
    assert sitk.ReadImage(str(case_mod.output_path(out, c, f))).GetPixelID() == sitk.sitkFloat32


def test_a_case_without_a_source_protocol_measures_its_input_once(tmp_path, monkeypatch):
    """The plan's source signature (tags as the only priors) is the cohort's "before": the input is not
    measured a second time, and the figures are those a separate measurement gives. With a source
    protocol from the user (other priors) the cohort measures the input itself."""
    from CTNormalizeLib import signature as sig_pkg
    from CTNormalizeLib.cohort import measure as measure_mod
    from CTNormalizeLib.cohort.case import BatchSettings, run_case
    from CTNormalizeLib.cohort.manifest import Case
    from CTNormalizeLib.io import read_volume

    ct = _write(tmp_path / "ct.nrrd", chest(BATCH_SHAPE, seed=2))
    measured_shapes = []
    real = sig_pkg.measure_signature

    def counting(volume, *args, **kwargs):
        measured_shapes.append(tuple(volume.shape))
        return real(volume, *args, **kwargs)

    import CTNormalizeLib.plan as plan_mod

    monkeypatch.setattr(plan_mod, "measure_signature", counting)
    monkeypatch.setattr(sig_pkg, "measure_signature", counting)
    s = BatchSettings(target=TARGET, method="mtf_ratio", measure=True)
    rec = run_case(Case("c1", str(ct), "c1"), s, str(tmp_path / "out"))
    assert rec["status"] == "done"
    assert measured_shapes.count(BATCH_SHAPE) == 2  # the input once (the plan), the output once
    monkeypatch.setattr(sig_pkg, "measure_signature", real)
    alone = measure_mod.scan_signature(read_volume(str(ct)))
    assert json.loads(json.dumps(alone, default=float)) == json.loads(json.dumps(rec["before"], default=float))

    measured_shapes.clear()
    monkeypatch.setattr(sig_pkg, "measure_signature", counting)
    c2 = Case("c2", str(ct), "c2", source="kernel=sharp,dose=0.5,thickness=2")
    assert run_case(c2, s, str(tmp_path / "out2"))["status"] == "done"
    assert measured_shapes.count(BATCH_SHAPE) == 3  # the plan's (the user's priors), the cohort's, the output's


def test_the_outputs_kernel_check_speaks_of_the_output():
    """After normalizing, a kernel mismatch is the output's, not advice to rerun with --kernel-from labels."""
    from types import SimpleNamespace

    from CTNormalizeLib.cohort.case import _after_warnings

    sig = {"kernel_class_pixels": "standard", "warnings": [
        {"code": "KERNEL_TAG_DISAGREES", "message": "... run `ctnormalize normalize` with --kernel-from labels"},
        {"code": "OTHER", "message": "kept"}]}
    out = _after_warnings(json.loads(json.dumps(sig)), SimpleNamespace(kernel="sharp", kernel_name=None), [])
    assert out["warnings"][0]["code"] == "OUTPUT_KERNEL_DIFFERS" and "--kernel-from" not in out["warnings"][0]["message"]
    assert "standard" in out["warnings"][0]["message"] and "sharp" in out["warnings"][0]["message"]
    assert out["warnings"][1] == {"code": "OTHER", "message": "kept"}
    # the run's own read-back of a target-texture output said it already: once is enough
    said = [{"code": "OUTPUT_KERNEL_NOT_REACHED", "message": "..."}]
    out = _after_warnings(json.loads(json.dumps(sig)), SimpleNamespace(kernel="sharp", kernel_name=None), said)
    assert [w["code"] for w in out["warnings"]] == ["OTHER"]


def test_batch_settings_refuse_float32_for_dicom():
    """From Python too (not only the CLI): a derived DICOM series stores integers."""
    from CTNormalizeLib.cohort.case import BatchSettings
    from CTNormalizeLib.errors import BadInputError

    with pytest.raises(BadInputError, match="float32"):
        BatchSettings(target=TARGET, output_format="dicom", output_type="float32")
    assert BatchSettings(target=TARGET, output_format="nrrd", output_type="float32").output_type == "float32"


def test_a_bad_radiomics_mask_fails_the_case_before_it_is_normalized(tmp_path):
    """batch --radiomics normalized a case (15-40 s on a real scan, its file left behind without a record)
    before it found the case's mask missing, empty or from another scan, on every run again."""
    from CTNormalizeLib.cohort.case import BatchSettings, run_case
    from CTNormalizeLib.cohort.manifest import Case

    ct = _write(tmp_path / "ct.nrrd", chest(BATCH_SHAPE, seed=1))
    elsewhere = sitk.GetImageFromArray(np.ones(BATCH_SHAPE, np.uint8))
    elsewhere.SetOrigin((400.0, 400.0, 400.0))
    sitk.WriteImage(elsewhere, str(tmp_path / "elsewhere.nrrd"))
    _write(tmp_path / "empty.nrrd", np.zeros(BATCH_SHAPE, np.uint8))
    s = BatchSettings(target=TARGET, method="mtf_ratio", measure=False, radiomics=True)
    for segments, words in ((None, "no segments file"), (tmp_path / "missing.nrrd", "not found"),
                            (tmp_path / "empty.nrrd", "No segment"), (tmp_path / "elsewhere.nrrd", "another scan")):
        c = Case("c", str(ct), "c", source="kernel=sharp,dose=0.5,thickness=2",
                 segments=None if segments is None else str(segments))
        rec = run_case(c, s, str(tmp_path / "out"))
        assert rec["status"] == "failed" and words in rec["error"], (segments, rec["error"])
    assert not list(tmp_path.glob("out/**/*.nrrd")), "normalized before the mask was checked"


def test_batch_emphysema_of_a_clean_output_carries_the_warning(tmp_path):
    """`emphysema` on a clean-texture output warns that its index reads low; the same numbers in batch's
    tables carried no warning."""
    from CTNormalizeLib.cohort.case import BatchSettings, run_case
    from CTNormalizeLib.cohort.manifest import Case
    from CTNormalizeLib.cohort.tables import write_tables

    ct = _write(tmp_path / "ct.nrrd", chest(BATCH_SHAPE, seed=3))
    c = Case("c", str(ct), "c", source="kernel=sharp,dose=0.5,thickness=2")
    rows = {}
    for texture in ("clean", "target"):
        rec = run_case(c, BatchSettings(target=TARGET, method="classical", measure=False, emphysema=True,
                                        texture=texture), str(tmp_path / texture))
        assert rec["status"] == "done", rec.get("error")
        write_tables(tmp_path / texture, [rec])
        rows[texture] = _rows(tmp_path / texture / "batch.csv")["c"]["warnings"]
    assert "CLEAN_TEXTURE_INPUT" in rows["clean"] and "CLEAN_TEXTURE_INPUT" not in rows["target"]
    assert "normalized:CLEAN_TEXTURE_INPUT" in rows["clean"]  # it is about the normalized scan, not the input


def test_batch_emphysema_says_when_the_z_extents_differ(tmp_path):
    """Thick -> thin output runs from the first slice's centre to the last one's: 8 slices of 4 mm (32 mm)
    became 29 slices of 1 mm, and emphysema.csv showed a lung-volume 'difference' of that geometry."""
    from CTNormalizeLib.cohort.case import BatchSettings, run_case
    from CTNormalizeLib.cohort.manifest import Case

    ct = _write(tmp_path / "ct.nrrd", chest(BATCH_SHAPE, seed=4), spacing=(1.2, 1.2, 4.0))
    c = Case("c", str(ct), "c", source="kernel=standard,dose=1,thickness=4")
    rec = run_case(c, BatchSettings(target="kernel=standard,thickness=1", method="classical", measure=False,
                                    emphysema=True), str(tmp_path / "out"))
    assert rec["status"] == "done", rec.get("error")
    codes = [w["code"] for w in rec["warnings"]]
    assert codes.count("Z_EXTENT_DIFFERS") == 1  # the plan's; the emphysema step does not repeat it
    same = run_case(c, BatchSettings(target="kernel=smooth", method="classical", measure=False, emphysema=True),
                    str(tmp_path / "out2"))
    assert "Z_EXTENT_DIFFERS" not in [w["code"] for w in same["warnings"]]


def test_a_folder_batch_leaves_out_its_own_and_earlier_outputs(tmp_path):
    """Outputs inside the input folder (this run's -o, an earlier run's case folders) are not cases again."""
    from CTNormalizeLib.cohort.manifest import find_inputs
    from CTNormalizeLib.errors import BadInputError

    src = tmp_path / "scans"
    src.mkdir()
    _write(src / "a.nrrd", chest(BATCH_SHAPE))
    earlier = src / "old_run" / "cases" / "a.nrrd"
    earlier.mkdir(parents=True)
    _write(earlier / "normalized.nrrd", chest(BATCH_SHAPE))
    (earlier / "record.json").write_text("{}")
    (earlier / "normalized").mkdir()  # where a derived DICOM series goes: below the case folder
    _write(earlier / "normalized" / "series.nrrd", chest(BATCH_SHAPE))
    (src / "new_run").mkdir()
    _write(src / "new_run" / "x.nrrd", chest(BATCH_SHAPE))  # something already in the chosen -o
    assert sorted(c.name for c in find_inputs(src)) == [
        "a.nrrd", "new_run/x.nrrd", "old_run/cases/a.nrrd/normalized.nrrd", "old_run/cases/a.nrrd/normalized/series.nrrd"]
    assert [c.name for c in find_inputs(src, exclude=[src / "new_run"], skip_case_outputs=True)] == ["a.nrrd"]
    # an -o that holds the input folder excludes nothing (the output guard refuses it, with its reason)
    assert len(find_inputs(src, exclude=[tmp_path], skip_case_outputs=True)) == 2
    with pytest.raises(BadInputError, match="earlier batch's case folders"):
        find_inputs(src / "old_run", skip_case_outputs=True)
    r = _run(["batch", "--input-dir", str(src), "-o", str(src / "new_run"), "--target", TARGET,
              "--method", "mtf_ratio", "--workers", "1", "--no-report", "--progress", "json"])
    assert r.returncode == 0, r.stderr
    started = json.loads(r.stdout.splitlines()[0])
    assert started["event"] == "started" and started["cases"] == 1
    assert "NIFTI_DROPS_PROVENANCE" not in r.stdout


def test_ctrl_c_cancels_a_two_worker_batch_without_worker_tracebacks(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, while both workers are busy."""
    import signal
    import time

    src = tmp_path / "scans"
    src.mkdir()
    for k in range(6):
        _write(src / f"c{k}.nrrd", chest((16, 128, 128)))
    proc = subprocess.Popen([sys.executable, "-m", "CTNormalizeLib", "batch", "--input-dir", str(src), "-o",
                             str(tmp_path / "out"), "--target", TARGET, "--method", "classical", "--workers", "2",
                             "--progress", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        for line in proc.stdout:  # a case done: the other worker is in the middle of one, and both are busy
            if json.loads(line)["event"] == "case":
                break
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Cancelled by SIGINT" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]


def test_the_eta_shares_the_cases_left_among_the_workers():
    """Two single-thread workers, 10 s cases: after the first case the 9 left share two slots (45 s), not
    9 x the elapsed time; a skipped or failed case (no work, or little) does not shorten the estimate."""
    import io

    from CTNormalizeLib.cli.batch_events import CaseProgress

    out = io.StringIO()
    p = CaseProgress("json", stream=out)
    p({"event": "started", "cases": 10, "workers": 2, "slots": 2})
    p({"event": "case", "case": "a", "status": "done", "seconds": 10.0, "error": "", "done": 1, "total": 10})
    p({"event": "case", "case": "b", "status": "skipped", "seconds": 12.0, "error": "", "done": 2, "total": 10})
    p({"event": "case", "case": "c", "status": "failed", "seconds": 0.01, "error": "x", "done": 3, "total": 10})
    eta = [json.loads(line)["eta_s"] for line in out.getvalue().splitlines() if '"progress"' in line]
    assert eta == [45.0, 40.0, 35.0]


def test_the_terminal_bar_shows_the_same_eta(capsys):
    """The bar showed tqdm's own estimate (elapsed / cases finished), not the one above."""
    from CTNormalizeLib.cli.batch_events import CaseProgress

    p = CaseProgress("bar")
    p({"event": "started", "cases": 10, "workers": 2, "slots": 2})
    p({"event": "case", "case": "a", "status": "done", "seconds": 10.0, "error": "", "done": 1, "total": 10})
    p.close()
    err = capsys.readouterr().err
    assert "about 00:45 left" in err and "<" not in err.splitlines()[-1], err


@pytest.mark.skipif(os.name != "posix", reason="the SIGINT wrapper is a POSIX shell script")
def test_spawned_workers_start_ignoring_sigint():
    """Inside spawned_ignoring_sigint a spawned process ignores SIGINT from its start (a Ctrl-C while a
    batch's workers import printed their tracebacks); outside, the executable is restored."""
    import multiprocessing
    import signal

    from CTNormalizeLib.cohort.worker_signals import spawned_ignoring_sigint

    ctx = multiprocessing.get_context("spawn")
    # a shell runs a background job with SIGINT ignored, and children inherit that: start from Python's default
    before = signal.signal(signal.SIGINT, signal.default_int_handler)

    def exit_code_after_sigint():
        p = ctx.Process(target=signal.raise_signal, args=(signal.SIGINT,))
        p.start()
        p.join(120)
        return p.exitcode

    try:
        with spawned_ignoring_sigint():
            assert exit_code_after_sigint() == 0
        assert exit_code_after_sigint() != 0
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_nifti_batch_says_once_that_the_outputs_keep_no_provenance(tmp_path):
    src = tmp_path / "scans"
    src.mkdir()
    for name in ("a.nrrd", "b.nrrd"):
        _write(src / name, chest(BATCH_SHAPE))
    r = _run(["batch", "--input-dir", str(src), "-o", str(tmp_path / "out"), "--target", TARGET,
              "--method", "mtf_ratio", "--workers", "1", "--no-report", "--progress", "json",
              "--output-format", "nii.gz"])
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[0]["event"] == "started" and events[-1]["event"] == "done"
    assert [e["code"] for e in events if e["event"] == "warning"].count("NIFTI_DROPS_PROVENANCE") == 1
    # a cohort that wrote no output has no outputs to warn about
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.nrrd").write_bytes(b"NRRD0004\nnot a volume")
    r = _run(["batch", "--input-dir", str(bad), "-o", str(tmp_path / "out2"), "--target", TARGET,
              "--method", "mtf_ratio", "--workers", "1", "--no-report", "--progress", "json",
              "--output-format", "nii.gz"])
    assert r.returncode != 0 and '"failed"' in r.stdout and "NIFTI_DROPS_PROVENANCE" not in r.stdout, r.stdout


def test_the_cohort_reports_case_table_says_why_a_value_is_missing():
    """characterize showed "—" for a kernel it could not read; the reason (KERNEL_NOT_MEASURED) was only in --json."""
    from CTNormalizeLib.cohort.report import _case_rows

    rec = {"case": "lung2", "group": "A", "status": "done", "seconds": 1.0,
           "before": {"kernel_class_pixels": None, "warnings": [{"code": "KERNEL_NOT_MEASURED", "message": "..."}],
                      "thickness_mm": 5.0, "thickness_source": "tag"},
           "after": {"thickness_mm": 3.61, "thickness_source": "image"},
           "warnings": [{"code": "NO_LUNGS", "message": "...", "scope": "normalized"}]}
    for after in (False, True):
        header, (row,) = _case_rows([rec], after)
        cells = dict(zip(header, row))
        assert cells["kernel class (pixels, before)"] == "—"
        said = cells["warnings (— above: why)"]
        assert "KERNEL_NOT_MEASURED" in said and "normalized:NO_LUNGS" in said
        assert cells["thickness (before)"] == "5 (tag)"  # where each thickness comes from: a tag, or the pixels
        assert not after or row[header.index("thickness (before)") + 1] == "3.61 (pixels)"
