"""The plan: resolved once, with the true provenance of every field; ``auto`` by measured figures;
``--target-like``; the method table seen by the CLI and the Slicer panel."""

import json
import subprocess
import sys

import numpy as np
import pytest

from CTNormalizeLib import Volume
from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.io import read_volume, write_volume
from CTNormalizeLib.method_rows import Method, MethodResult, register, unregister
from CTNormalizeLib.methods import HELDOUT_COLUMN, choose_auto, method_table, pair_kind
from CTNormalizeLib.plan import make_plan
from CTNormalizeLib.protocols import Protocol


@pytest.fixture(scope="module")
def scans():
    """One held-out phantom scanned sharp/25 %/2 mm (source) and smooth/full/1 mm (reference)."""
    from CTNormalizeLib.simulate import make_phantom, project_truth, simulate_scan

    truth = make_phantom(1002, shape=(24, 192, 192), spacing=(0.5, 0.8, 0.8)).volume
    proj = project_truth(truth)
    src = simulate_scan(truth, Protocol(kernel="sharp", dose=0.25, thickness=2.0), seed=1, projections=proj)
    ref = simulate_scan(truth, Protocol(kernel="smooth", dose=1.0, thickness=1.0), seed=2, projections=proj)
    ref2 = simulate_scan(truth, Protocol(kernel="smooth", dose=1.0, thickness=1.0), seed=3, projections=proj)
    tagless = lambda v: Volume(v.hu, v.spacing, v.origin, v.direction, meta={"Modality": "CT"})  # noqa: E731
    return tagless(src), tagless(ref), tagless(ref2)


def test_tagless_plan_provenance(scans):
    src, _, _ = scans
    plan = make_plan(src, None, "emphysema-reference", method="classical")
    s = plan.source.sources
    assert plan.source.kernel == "sharp" and s["kernel"].source == "image" and 0 < s["kernel"].confidence < 1
    assert s["thickness"].source == "image" and plan.source.thickness == pytest.approx(2.0, rel=0.25)
    assert plan.source.dose is None and s["dose"].source == "unknown"
    assert plan.source_signature.sources["noise_hu"].source == "image"
    assert plan.target.sources["kernel"].source == "preset"
    # the noise in the user's terms: HU and relative to the target, about the true quarter dose
    assert plan.noise_equivalent_dose == pytest.approx(0.25, rel=0.4)
    assert "HU" in plan.noise_summary() and "of its dose" in plan.noise_summary()


def test_a_device_the_method_does_not_use_is_said(scans):
    """--device cuda with a CPU-only method (asked for, or picked by auto) is not silently dropped."""
    src, _, _ = scans
    plan = make_plan(src, None, "emphysema-reference", method="classical", device="cuda")
    said = [w for w in plan.warnings if w["code"] == "DEVICE_NOT_USED"]
    assert plan.device == "cpu" and len(said) == 1 and "'cuda'" in said[0]["message"]
    assert "DEVICE_NOT_USED" in json.dumps(plan.to_dict())  # the plan still serializes (the started event)
    for quiet in ("auto", None, " CPU "):
        assert not any(w["code"] == "DEVICE_NOT_USED" for w in make_plan(src, None, "emphysema-reference",
                                                                          method="classical", device=quiet).warnings)


def test_user_fields_win_and_say_so(scans):
    src, _, _ = scans
    plan = make_plan(src, "kernel=sharp,dose=0.25,thickness=2", "emphysema-reference", method="classical")
    s = plan.source.sources
    assert s["kernel"].source == "user" and s["dose"].source == "user" and s["thickness"].source == "user"
    assert plan.source.dose == 0.25
    # the explicit dose ratio sets the target noise; the measured one agrees with it
    auto = make_plan(src, None, "emphysema-reference", method="classical")
    assert plan.target_signature.noise_hu == pytest.approx(auto.target_signature.noise_hu, rel=0.4)


def test_a_target_naming_the_stated_kernel_keeps_the_measured_one_and_says_so(scans):
    """Tags say very-sharp (B70f), the pixels read sharp: a very-sharp target is "no kernel change",
    said in a warning that tells how to convert if the tag is wrong."""
    src, _, _ = scans
    plan = make_plan(src, "kernel=B70f", "kernel=very-sharp,dose=0.25,thickness=2", method="classical")
    said = {w["code"]: w["message"] for w in plan.warnings}
    assert plan.source_signature.kernel == "sharp"
    assert plan.target_signature.transfer == plan.source_signature.transfer
    assert "TARGET_KEEPS_SOURCE_KERNEL" in said and "--source kernel=sharp" in said["TARGET_KEEPS_SOURCE_KERNEL"]
    # the stated class agreeing with the pixels is the plain "same kernel" case: nothing to say
    same = make_plan(src, "kernel=B60f", "kernel=sharp,dose=1,thickness=2", method="classical")
    assert "TARGET_KEEPS_SOURCE_KERNEL" not in {w["code"] for w in same.warnings}


def test_dicom_series_plan_provenance(tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_io import write_dicom_series

    write_dicom_series(tmp_path / "s", n_slices=8, tags={"ConvolutionKernel": "B30f", "Exposure": 120,
                                                          "CTDIvol": 6.5}, size=96)
    vol = read_volume(tmp_path / "s")
    plan = make_plan(vol, None, "radiomics-reference", method="classical")
    s = plan.source.sources
    assert plan.source.kernel_name == "B30f" and s["kernel_name"].source == "tag"
    assert s["thickness"].source == "tag" and plan.source.thickness == 2.5
    assert plan.source.mas == 120 and s["mas"].source == "tag"
    assert plan.source.ctdivol == 6.5 and s["ctdivol"].source == "tag"
    assert s["kernel"].source in ("image", "tag")


def test_report_carries_true_provenance(scans, tmp_path):
    src, _, _ = scans
    p = tmp_path / "in.nrrd"
    write_volume(src, p)
    out, rep = tmp_path / "out.nrrd", tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "CTNormalizeLib", "normalize", str(p), "-o", str(out),
                        "--target", "emphysema-reference", "--method", "classical", "--progress", "json",
                        "--report", str(rep)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    events = [json.loads(line) for line in r.stdout.splitlines()]
    started = next(e for e in events if e["event"] == "started")
    assert started["method"] == "classical" and "HU" in started["noise"]
    report = json.loads(rep.read_text())
    srcs = report["plan"]["source"]["sources"]
    assert srcs["kernel"]["source"] == "image" and srcs["dose"]["source"] == "unknown"
    assert srcs["thickness"]["source"] in ("tag", "image")
    assert report["plan"]["source_signature"]["noise_hu"] > 0
    done = next(e for e in events if e["event"] == "done")
    assert done["report"]["plan"]["source"]["sources"] == srcs


def test_target_like_reference_scan(scans):
    from CTNormalizeLib.normalization import normalize

    src, ref, ref2 = scans
    out = normalize(src, None, target_like=ref, method="classical", texture="target")
    plan = out.plan
    assert plan.target_signature.origin == "reference" and plan.target.kernel == "smooth"
    assert plan.target.sources["kernel"].source == "reference"
    assert plan.target_signature.noise_hu == pytest.approx(ref.hu.std() * 0 + plan.target_signature.noise_hu)
    n = min(out.volume.shape[0], ref2.shape[0])
    body = ref2.hu[:n] > -500
    l1_out = np.abs(out.volume.hu[:n] - ref2.hu[:n])[body].mean()
    from CTNormalizeLib.classical import change_thickness

    base = change_thickness(src.hu, src.spacing, 2.0, 2.0, 1.0).hu[:n]
    l1_src = np.abs(base - ref2.hu[:n])[body].mean()
    assert l1_out < 0.6 * l1_src, (l1_out, l1_src)
    # a reference whose slices are thicker than their spacing: the plan's target spacing is the one the output gets
    overlapping = Volume(ref.hu, ref.spacing, meta={"Modality": "CT", "SliceThickness": "2"})
    plan = make_plan(src, None, target_like=overlapping, method="classical")
    assert plan.target.thickness == 2.0 and plan.target.spacing == plan.target_signature.spacing_mm == 1.0
    assert "spacing=1," in plan.target.spec() + ","


def test_a_target_like_scan_is_the_reference_of_histogram_matching(scans):
    """A reference-based method given only --target-like matches that scan (it asked for --reference before);
    an explicit reference still wins."""
    from CTNormalizeLib.normalization import normalize

    src, ref, ref2 = scans
    body = lambda v: v.hu[v.hu > -500]  # noqa: E731
    out = normalize(src, None, target_like=ref, method="histogram_match")
    q = np.linspace(0.05, 0.95, 19)
    err = np.abs(np.quantile(body(out.volume), q) - np.quantile(body(ref), q)).max()
    err_src = np.abs(np.quantile(body(src), q) - np.quantile(body(ref), q)).max()
    assert err < 0.3 * err_src, (err, err_src)
    shifted = Volume(ref.hu + 200.0, ref.spacing, ref.origin, ref.direction, meta=dict(ref.meta))
    both = normalize(src, None, target_like=ref, method="histogram_match", reference=shifted)
    assert np.median(body(both.volume)) > np.median(body(out.volume)) + 150
    # frequency decomposition keeps predicting the target's band energies from the plan (the reference's
    # signature at the requested thickness), not copying the reference patient's lungs
    freq = normalize(src, None, target_like=ref, method="frequency_decomposition")
    step = next(st for st in freq.result.steps if st["method"] == "frequency_decomposition")
    assert "predicted" in json.dumps(step), step


def test_auto_picks_by_measured_figures(scans):
    src, _, _ = scans
    plan = make_plan(src, None, "emphysema-reference", method="classical")
    table = method_table()
    col = HELDOUT_COLUMN[pair_kind(plan)]

    def held(m):
        f = m.figures.get("l1_gap_closed", {})
        return f.get(col) if f.get(col) is not None else f.get("heldout_physics")

    best = max((m for m in table.values() if m.complete and m.why_not(plan) is None),
               key=lambda m: (held(m) or -1, m.figures.get("l1_gap_closed", {}).get("in_distribution") or -1))
    name, reason, _ = choose_auto(plan, table)
    assert name == best.name and name in reason
    # a method with better figures wins, and the reason says why
    toy = Method("toy-best", "classical", "toy", ("kernel", "noise", "thickness"),
                 run=lambda v, p, pr=None, ref=None: MethodResult(v),
                 figures={"l1_gap_closed": {"in_distribution": 0.99, "heldout_physics": 0.99}})
    register(toy)
    try:
        assert choose_auto(plan)[0] == "toy-best"
    finally:
        unregister("toy-best")


def test_auto_ranks_by_the_figures_of_the_pairs_kind(scans):
    """A kernel conversion and a dose-only request can pick different methods: each is ranked
    by its held-out figure for that kind of pair."""
    src, _, _ = scans
    kernel_plan = make_plan(src, None, "kernel=smooth,dose=1,thickness=1", method="classical")
    dose_plan = make_plan(src, None, "dose=1", method="classical")
    assert pair_kind(kernel_plan) == "kernel_change" and pair_kind(dose_plan) == "noise_only"
    run = lambda v, p, pr=None, ref=None: MethodResult(v)  # noqa: E731
    figs = lambda k, n: {"l1_gap_closed": {"heldout_physics": max(k, n), "heldout_physics_kernel_change": k,  # noqa: E731
                                           "heldout_physics_noise_only": n}}
    register(Method("toy-kernel-best", "classical", "toy", ("kernel", "noise", "thickness"), run=run,
                    figures=figs(0.99, 0.2)))
    register(Method("toy-noise-best", "classical", "toy", ("kernel", "noise", "thickness"), run=run,
                    figures=figs(0.2, 0.98)))
    try:
        name, reason, _ = choose_auto(kernel_plan)
        assert name == "toy-kernel-best" and "kernel change pairs" in reason
        name, reason, _ = choose_auto(dose_plan)
        assert name == "toy-noise-best" and "same-kernel (dose or thickness) pairs" in reason
    finally:
        unregister("toy-kernel-best")
        unregister("toy-noise-best")


def test_auto_ranks_an_uncovered_kernel_direction_by_in_distribution_figures(scans):
    """Held-out kernel changes that all smooth say nothing of sharpening: for a sharpening pair, methods whose
    card says so rank by their in-distribution figures (a card that does not say is taken at its word)."""
    from dataclasses import replace as dc_replace

    from CTNormalizeLib.methods import heldout_applies, kernel_direction

    src, _, _ = scans
    smooth = make_plan(src, "kernel=standard", "kernel=smooth,dose=1,thickness=1", method="classical",
                       kernel_from="labels")
    sharp = make_plan(src, "kernel=standard", "kernel=very-sharp,dose=1,thickness=1", method="classical",
                      kernel_from="labels")
    assert (kernel_direction(smooth), kernel_direction(sharp)) == ("smoothing", "sharpening")
    run = lambda v, p, pr=None, ref=None: MethodResult(v)  # noqa: E731
    card = {"selection": {"heldout_kernel_change_directions": ["smoothing"]}}
    held_best = Method("toy-smooths-well", "classical", "toy", ("kernel", "noise", "thickness"), run=run, card=card,
                       figures={"l1_gap_closed": {"heldout_physics_kernel_change": 0.999, "in_distribution": 0.5}})
    ind_best = Method("toy-all-round", "classical", "toy", ("kernel", "noise", "thickness"), run=run, card=card,
                      figures={"l1_gap_closed": {"heldout_physics_kernel_change": 0.998, "in_distribution": 0.997}})
    assert heldout_applies(held_best, "smoothing") and not heldout_applies(held_best, "sharpening")
    table = {m.name: m for m in (held_best, ind_best)}
    assert choose_auto(smooth, table)[0] == "toy-smooths-well"
    name, reason, _ = choose_auto(sharp, table)
    assert name == "toy-all-round" and "sharpening" in reason and "toy-smooths-well" in reason
    silent = {m.name: dc_replace(m, card={}) for m in table.values()}
    assert choose_auto(sharp, silent)[0] == "toy-smooths-well"


def test_auto_ranks_a_target_texture_request_by_target_texture_figures(scans):
    """The best clean estimate is not always the best method for the target texture: each
    texture is ranked by its own figures (a card without target figures by its clean ones)."""
    src, _, _ = scans
    clean_plan = make_plan(src, None, "kernel=smooth,dose=1,thickness=1", method="classical", texture="clean")
    target_plan = make_plan(src, None, "kernel=smooth,dose=1,thickness=1", method="classical", texture="target")
    run = lambda v, p, pr=None, ref=None: MethodResult(v)  # noqa: E731
    register(Method("toy-clean-best", "classical", "toy", ("kernel", "noise", "thickness"), run=run,
                    figures={"l1_gap_closed": {"heldout_physics": 0.999},
                             "l1_gap_closed_target": {"heldout_physics": 0.5}}))
    register(Method("toy-target-best", "classical", "toy", ("kernel", "noise", "thickness"), run=run,
                    figures={"l1_gap_closed": {"heldout_physics": 0.998},
                             "l1_gap_closed_target": {"heldout_physics": 0.997}}))
    try:
        assert choose_auto(clean_plan)[0] == "toy-clean-best"
        name, reason, _ = choose_auto(target_plan)
        assert name == "toy-target-best" and "target texture" in reason
    finally:
        unregister("toy-clean-best")
        unregister("toy-target-best")


def test_toy_method_reaches_cli_and_slicer_list(tmp_path, monkeypatch):
    """Adding a kernel-conversion method is one row: the CLI help, --method validation and Slicer see it."""
    toy = Method("toy-kernel", "classical", "a toy kernel conversion", ("kernel",),
                 run=lambda v, p, pr=None, ref=None: MethodResult(v.with_array(v.hu.copy())))
    register(toy)
    try:
        from CTNormalizeLib.cli.cmd_normalize import _method_help

        assert "toy-kernel" in _method_help()
        assert "toy-kernel" in method_table()
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[2] / "CTNormalize"))
        from CTNormalizeSlicerLib.logic import NormalizationLogic

        assert "toy-kernel" in [n for n, _ in NormalizationLogic.methods()]
    finally:
        unregister("toy-kernel")
    with pytest.raises(BadInputError, match="toy-kernel|Choose one of"):
        from CTNormalizeLib.methods import get_method

        get_method("toy-kernel")


def test_unknown_method_lists_auto_once():
    from CTNormalizeLib.methods import get_method

    with pytest.raises(BadInputError) as e:
        get_method("nope")
    assert e.value.message.count("auto") == 1


def test_python_api_takes_paths(scans, tmp_path):
    import CTNormalizeLib as ctn

    src, _, _ = scans
    p = tmp_path / "scan.nrrd"
    ctn.write_volume(src, p)
    out = ctn.normalize(str(p), None, "kernel=smooth", method="mtf_ratio")
    assert out.plan.method == "mtf_ratio" and out.volume.shape == src.shape
    sig = ctn.measure_signature(ctn.read_volume(p))
    assert sig.kernel == out.plan.source_signature.kernel
    assert callable(ctn.emphysema_index) and callable(ctn.make_plan)


def test_same_kernel_class_keeps_the_measured_transfer(scans):
    """Dose-only normalization: naming the source's own class must not convert between two curves of it."""
    src, _, _ = scans
    plan = make_plan(src, "kernel=sharp,dose=0.25", "kernel=sharp,dose=1", method="classical")
    assert plan.target_signature.transfer == plan.source_signature.transfer
    out = __import__("CTNormalizeLib.normalization", fromlist=["execute"]).execute(plan, src)
    done = [s["method"] for s in out.result.steps if s["done"]]
    assert "mtf_ratio" not in done and "denoise" in done
    labels = make_plan(src, "kernel=sharp,dose=0.25", "kernel=smooth,dose=1", method="classical", kernel_from="labels")
    assert labels.source_signature.transfer.f50 == pytest.approx(0.62)  # the class's nominal curve
    assert labels.source_signature.sources["transfer"].source == "user"


def test_reference_of_the_same_class_with_another_transfer_warns(scans):
    """A reference measuring the source's kernel class but another transfer: the chain converts, and the
    plan says how to keep the kernel (dose-only changes: held-out case c lost 0.09 that way)."""
    from dataclasses import replace as dc_replace

    from CTNormalizeLib.plan import _reference_kernel_warning
    from CTNormalizeLib.signature import Transfer

    src, ref, _ = scans
    sig = make_plan(src, None, "emphysema-reference", method="classical").source_signature
    t = sig.transfer
    sharper = dc_replace(sig, transfer=Transfer(t.f50 * 1.14, t.p, t.boost))
    assert sharper.kernel == sig.kernel
    (w,) = _reference_kernel_warning(sig, sharper)
    slightly = dc_replace(sig, transfer=Transfer(t.f50 * 1.05, t.p, t.boost))
    assert _reference_kernel_warning(sig, slightly) == []  # within 10 %: a noise-only pair, nothing to warn of
    assert w["code"] == "REFERENCE_KERNEL_SAME_CLASS" and "--target dose=1" in w["message"]
    assert _reference_kernel_warning(sig, sig) == []
    other = dc_replace(sig, kernel="smooth" if sig.kernel != "smooth" else "sharp")
    assert _reference_kernel_warning(sig, other) == []  # another class: a kernel change the user asked for
    plan = make_plan(src, None, target_like=ref, method="classical")  # sharp source, smooth reference
    assert "REFERENCE_KERNEL_SAME_CLASS" not in {x["code"] for x in plan.warnings}


def test_the_one_line_summary_names_the_reference_and_a_kernel_conversion(scans):
    """Two specs can read alike (both smooth) while the kernel is converted: the summary says so, and names
    the reference scan; a dose-only plan's summary adds nothing."""
    src, ref, _ = scans
    like = make_plan(src, None, target_like=ref, method="classical")
    named = Volume(ref.hu, ref.spacing, ref.origin, ref.direction,
                   meta={**ref.meta, "source_path": "/data/site b/ref_smooth.nrrd"})
    like = make_plan(src, None, target_like=named, method="classical")
    text = like.summary()
    assert "[like ref_smooth.nrrd; kernel MTF50" in text and "/data" not in text  # the file's name, not its folders
    assert f"{like.source_signature.transfer.mtf50:.2f} -> {like.target_signature.transfer.mtf50:.2f}" in text
    assert like.to_dict()["summary"] == text
    dose_only = make_plan(src, None, "dose=1", method="classical")
    assert dose_only.summary() == f"{dose_only.source.spec()} -> {dose_only.target.spec()}"


def test_reference_with_a_thickness_override_and_refused_fields(scans):
    """--target-like plus --target: a thickness alone also sets the spacing (not the reference's); a kernel or
    dose is refused in words instead of being dropped silently (found by a new-user check)."""
    src, ref, _ = scans
    plan = make_plan(src, None, "thickness=3", target_like=ref, method="classical")
    assert plan.target_signature.thickness_mm == 3.0 and plan.target_signature.spacing_mm == 3.0
    assert plan.target.spacing == 3.0
    # the reference's protocol at 3 mm: its noise there (same dose), so the source's implied dose does not move
    at_ref = make_plan(src, None, target_like=ref, method="classical")
    t_ref = at_ref.target_signature.thickness_mm
    assert t_ref == pytest.approx(1.0, rel=0.25)
    assert plan.target_signature.noise_hu == pytest.approx(at_ref.target_signature.noise_hu * (t_ref / 3.0) ** 0.5)
    assert plan.noise_equivalent_dose == pytest.approx(at_ref.noise_equivalent_dose, rel=1e-6)
    said = plan.target_signature.sources["noise_hu"]
    assert said.source == "reference" and "to 3 mm at the same dose" in said.detail
    plan = make_plan(src, None, "thickness=3,spacing=1.5", target_like=ref, method="classical")
    assert plan.target_signature.spacing_mm == 1.5
    for spec in ("kernel=sharp,thickness=3", "dose=0.5", "emphysema-reference"):
        with pytest.raises(BadInputError, match="may only set thickness and spacing"):
            make_plan(src, None, spec, target_like=ref, method="classical")


def test_a_target_that_leaves_the_thickness_open_keeps_the_slices_and_their_spacing():
    """Overlapping slices (5 mm apart, 10 mm thick) normalized to a kernel alone came out 10 mm apart:
    half the slices gone without a word. A target naming a thickness gets slices that far apart."""
    from CTNormalizeLib.plan import complete_target
    from CTNormalizeLib.protocols import Protocol

    source = Protocol(kernel="sharp", thickness=10.0, spacing=5.0)
    kept, _, _ = complete_target(source, "kernel=standard")
    assert (kept.thickness, kept.spacing) == (10.0, 5.0)
    thicker, _, _ = complete_target(source, "kernel=standard,thickness=20")
    assert thicker.thickness == 20.0 and thicker.spacing is None  # the target's slices, contiguous


def test_every_thick_to_thin_output_says_it_is_interpolated(scans):
    """The learned models put thick slices on a finer z grid without the classical step's warning."""
    from dataclasses import replace as dc_replace

    from CTNormalizeLib.normalization import execute

    src, _, _ = scans  # 2 mm slices

    def finer(v, p, pr=None, ref=None):
        out = v.with_array(np.repeat(v.hu, 2, axis=0))
        out.spacing = (v.spacing[0] / 2, v.spacing[1], v.spacing[2])
        return MethodResult(out)

    register(Method("toy-thin", "learned", "a toy z interpolation", ("thickness",), run=finer))
    try:
        plan = make_plan(src, "kernel=sharp,dose=0.25,thickness=2", "thickness=1", method="z_profile")
        warned = execute(dc_replace(plan, method="toy-thin"), src, with_qc=False).warnings
        assert [w["code"] for w in warned].count("THICK_TO_THIN_INTERPOLATION") == 1
        # the classical step's own warning is not repeated
        classical = execute(plan, src, with_qc=False).warnings
        assert [w["code"] for w in classical].count("THICK_TO_THIN_INTERPOLATION") == 1
    finally:
        unregister("toy-thin")


def test_thick_to_thin_qc_compares_the_slices_the_source_has(scans):
    """QC of a finer z grid compares the output slices at the source's positions (those between are made by
    interpolation, and a linearly interpolated input is no reference for them): a faithful interpolation passes,
    a change of the anatomy on those slices is still caught."""
    from dataclasses import replace as dc_replace

    from CTNormalizeLib.normalization import _shared_slices, execute
    from scipy.interpolate import CubicSpline

    assert _shared_slices(4, 5.0, 16, 1.0)[0].tolist() == [0, 1, 2, 3]
    assert _shared_slices(4, 5.0, 16, 1.0)[1].tolist() == [0, 5, 10, 15]
    assert _shared_slices(3, 3.0, 5, 2.0)[1].tolist() == [0, 3]
    assert _shared_slices(2, 5.0, 3, 2.0) is None  # one shared slice: nothing to compare on

    src, _, _ = scans  # 2 mm slices

    def spline(v, shift):
        def run(v, p, pr=None, ref=None):  # cubic, where the QC's reference interpolates linearly
            z = np.arange(v.shape[0]) * v.spacing[0]
            out = v.with_array(CubicSpline(z, v.hu, axis=0)(np.arange(2 * v.shape[0] - 1) * v.spacing[0] / 2)
                               .astype(np.float32) + np.float32(shift) * (v.hu[:1] > -500))
            out.spacing = (v.spacing[0] / 2, v.spacing[1], v.spacing[2])
            return MethodResult(out)
        return run

    register(Method("toy-spline", "learned", "cubic z interpolation", ("thickness",), run=spline(src, 0.0)))
    register(Method("toy-shift", "learned", "cubic z interpolation + 100 HU", ("thickness",), run=spline(src, 100.0)))
    try:
        plan = make_plan(src, "kernel=sharp,dose=0.25,thickness=2", "thickness=1", method="z_profile")
        faithful = execute(dc_replace(plan, method="toy-spline"), src)
        assert "source's slice positions" in faithful.result.qc["compared_slices"]
        assert faithful.result.qc["changed_fraction"] == 0.0
        shifted = execute(dc_replace(plan, method="toy-shift"), src)
        assert "QC_LARGE_CHANGE" in {w["code"] for w in shifted.warnings}
        # a thicker target on a finer grid (2 mm slices -> 4 mm every 1 mm) is no thick -> thin: the input is
        # widened to the target's profile and every slice compared, as before
        thicker = execute(make_plan(src, "kernel=sharp,dose=0.25,thickness=2", "thickness=4,spacing=1",
                                    method="z_profile"), src)
        assert "every output slice" in thicker.result.qc["compared_slices"]
        assert "QC_LARGE_CHANGE" not in {w["code"] for w in thicker.warnings}
    finally:
        unregister("toy-spline")
        unregister("toy-shift")


def test_the_plan_says_when_the_output_will_cover_less_along_z(scans):
    """Thick -> thin output runs from the centre of the first input slice to the last one's: on a short crop
    (8 x 5 mm -> 36 x 1 mm) a tenth of it, which only `emphysema` noticed afterwards (and a radiomics volume
    read 9.6 % smaller). A method that keeps the input's slices keeps its coverage: no warning."""
    from CTNormalizeLib.quantify.coverage import output_extent_warning

    (w,) = output_extent_warning(8, 5.0, 1.0)
    assert w["code"] == "Z_EXTENT_DIFFERS" and "36 mm" in w["message"] and "40 mm" in w["message"]
    assert "-10.0 %" in w["message"]
    assert output_extent_warning(61, 5.0, 1.0) == []  # a whole 305 mm scan: 1.3 %, within the tolerance
    assert output_extent_warning(8, 5.0, 5.0) == []
    src, _, _ = scans  # 2 mm slices of a 12 mm phantom
    thin = make_plan(src, None, "emphysema-reference", method="classical")
    assert "Z_EXTENT_DIFFERS" in [w["code"] for w in thin.warnings]
    same = make_plan(src, None, "kernel=smooth", method="classical")
    assert "Z_EXTENT_DIFFERS" not in [w["code"] for w in same.warnings]
    for partial in ("mtf_ratio", "denoise"):  # they leave the slices as they are
        kept = make_plan(src, None, "emphysema-reference", method=partial)
        assert "Z_EXTENT_DIFFERS" not in [w["code"] for w in kept.warnings], partial
