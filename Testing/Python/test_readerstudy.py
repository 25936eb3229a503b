"""Reader studies: creation, randomization, blinding, durable answers, CLI."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.readerstudy import ReaderSession, create_study, load_study, reader_file_stem
from CTNormalizeLib.readerstudy import answers as A
from CTNormalizeLib.readerstudy import design as D
from CTNormalizeLib.readerstudy.storage import nrrd_header

VARIANTS = ("original", "normalized", "source")
PROTOCOLS = {"original": "kernel=smooth,dose=1,thickness=1", "normalized": "kernel=smooth,dose=1,thickness=1",
             "source": "kernel=sharp,dose=0.25,thickness=2"}
REPO = Path(__file__).resolve().parents[2]


def _image(variant, seed):
    rng = np.random.default_rng(seed)
    arr = np.full((8, 32, 32), -1000.0)
    arr[:, 8:24, 8:24] = 40.0
    arr += rng.normal(0, 20 if variant == "source" else 8, arr.shape)
    img = sitk.GetImageFromArray(arr.astype(np.float32 if variant == "normalized" else np.int16))
    img.SetSpacing((0.7, 0.7, 1.0 if variant != "source" else 2.0))
    img.SetOrigin((-11.0, -12.0, 13.0))
    # Truth-bearing metadata that must never reach a blinded item.
    img.SetMetaData("SeriesDescription", f"{variant} series TRUTHMARK")
    img.SetMetaData("ConvolutionKernel", "B70f" if variant == "source" else "B30f")
    return img


def make_manifest(folder: Path, n_cases=6, variants=VARIANTS, protocols=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_cases):
        row = {"case": f"PATIENT-{i:02d}"}
        for v in variants:
            path = folder / f"{v}_PATIENT-{i:02d}.nrrd"
            sitk.WriteImage(_image(v, 100 * i + len(v)), str(path))
            row[v] = path.name  # relative to the manifest
        if protocols:
            for v in variants:
                row[f"{v}_protocol"] = PROTOCOLS[v]
        rows.append(row)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("data"), n_cases=7)


def _key(study_dir):
    return json.loads((Path(study_dir) / "key.json").read_text())


# ----------------------------------------------------------------------------- creation
def test_manifest_errors(tmp_path, manifest):
    bad = tmp_path / "bad.csv"
    bad.write_text("case,original,normalized\nA,/nope/a.nrrd,/nope/b.nrrd\n")
    with pytest.raises(BadInputError, match="does not exist"):
        create_study(bad, tmp_path / "s", "single", 1)
    bad.write_text("case,original,normalized\nA,x,y\nA,x,y\n")
    with pytest.raises(BadInputError, match="twice"):
        create_study(bad, tmp_path / "s", "single", 1)
    with pytest.raises(BadInputError, match="reference variant"):
        create_study(manifest, tmp_path / "s", "pair", 1, variants=["normalized", "source"])
    with pytest.raises(BadInputError, match="--readers"):
        create_study(manifest, tmp_path / "s", "single", 1, per_reader=True)
    with pytest.raises(BadInputError, match="--per-reader"):  # names without a per-reader order were ignored silently
        create_study(manifest, tmp_path / "s", "single", 1, readers=["ann", "bob"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BadInputError, match="not an empty folder"):
        create_study(manifest, tmp_path / "full", "single", 1)
    assert not (tmp_path / "s").exists()  # a failed creation leaves nothing


def test_randomization_reproducible_from_seed(tmp_path, manifest):
    a = create_study(manifest, tmp_path / "a", "single", 42)
    b = create_study(manifest, tmp_path / "b", "single", 42)
    c = create_study(manifest, tmp_path / "c", "single", 43)
    sa, sb, sc = (load_study(tmp_path / x) for x in "abc")
    assert sa["items"] == sb["items"]
    assert _key(tmp_path / "a")["items"] == _key(tmp_path / "b")["items"]
    assert _key(tmp_path / "a")["cases"] == _key(tmp_path / "b")["cases"]
    assert (sa["items"], _key(tmp_path / "a")["items"]) != (sc["items"], _key(tmp_path / "c")["items"])
    assert a["n_items"] == 7 and a["variants"] == ["original", "normalized"]  # source left out by default
    # Per reader: reproducible per name, different between names.
    r1 = create_study(manifest, tmp_path / "r1", "single", 7, per_reader=True, readers=["ann", "bob"])
    r2 = create_study(manifest, tmp_path / "r2", "single", 7, per_reader=True, readers=["bob", "ann", "cy"])
    s1, s2 = load_study(tmp_path / "r1"), load_study(tmp_path / "r2")
    assert s1["readers"]["ann"] == s2["readers"]["ann"] and s1["readers"]["bob"] == s2["readers"]["bob"]
    assert s1["readers"]["ann"] != s1["readers"]["bob"]
    assert r1["n_items"] == 14


@pytest.mark.parametrize("per_reader", [False, True])
def test_single_design_is_balanced(tmp_path, manifest, per_reader):
    readers = ["r1", "r2", "r3", "r4"] if per_reader else None
    create_study(manifest, tmp_path / "s", "single", 3, per_reader=per_reader, readers=readers)
    key = _key(tmp_path / "s")
    truths = list(key["readers"].values()) if per_reader else [key["items"]]
    for t in truths:
        counts = Counter(v["variant"] for v in t.values())
        assert sorted(counts.values()) == [3, 4], counts  # 7 cases over 2 variants
        assert len({v["case"] for v in t.values()}) == 7  # every case once


def test_pair_design_sides_balanced(tmp_path, manifest):
    create_study(manifest, tmp_path / "p", "pair", 11, per_reader=True, readers=["a", "b", "c"])
    study, key = load_study(tmp_path / "p"), _key(tmp_path / "p")
    for reader, truth in key["readers"].items():
        on_a = sum(t["A"] == "original" for t in truth.values())
        assert on_a in (3, 4)
        assert all({t["A"], t["B"]} == {"original", "normalized"} for t in truth.values())
        items = study["readers"][reader]
        assert len(items) == len(truth) == 7 and all(it["views"].keys() == {"A", "B"} for it in items)


def test_protocol_design_items_and_options(tmp_path, manifest):
    create_study(manifest, tmp_path / "q", "protocol", 5)
    study, key = load_study(tmp_path / "q"), _key(tmp_path / "q")
    assert len(study["items"]) == 7 * 3
    q = study["questions"]["protocol"]
    assert q["dose"] == [1.0, 0.25] and q["thickness"] == [1.0, 2.0]
    assert key["items"][study["items"][0]["id"]]["protocol"]["kernel"] in ("smooth", "sharp")


def test_a_slice_profile_is_kept_with_the_truth_not_asked(tmp_path):
    """An axial (rectangular-slice) source keeps its profile in the key; readers are asked kernel, dose, thickness."""
    m = make_manifest(tmp_path / "data", n_cases=2)
    text = m.read_text().replace("kernel=sharp,dose=0.25,thickness=2", "kernel=sharp,dose=0.25,thickness=2,profile=rect")
    m.write_text(text)
    create_study(m, tmp_path / "q", "protocol", 5)
    study, key = load_study(tmp_path / "q"), _key(tmp_path / "q")
    truths = [t["protocol"] for t in key["items"].values()]
    assert {t.get("profile") for t in truths} == {None, "rect"}
    assert all("profile" not in t for t in truths if t["thickness"] == 1.0)
    assert set(study["questions"]["protocol"]) >= {"kernel", "dose", "thickness"}
    assert "profile" not in study["questions"]["protocol"]


def test_blinding_holds(tmp_path, manifest):
    key_file = tmp_path / "secret" / "key.json"
    create_study(manifest, tmp_path / "s", "pair", 9, key_path=key_file)
    create_study(manifest, tmp_path / "t", "protocol", 9)
    rows = list(csv.DictReader(open(manifest)))
    forbidden = {"TRUTHMARK", "B70f", "B30f", "PATIENT", "normalized", "source", "kernel=", str(manifest.parent)}
    forbidden |= {r["case"] for r in rows}
    assert key_file.exists() and not (tmp_path / "s" / "key.json").exists()
    for study_dir in (tmp_path / "s", tmp_path / "t"):
        visible = [p for p in study_dir.rglob("*") if p.name != "key.json"]
        for p in visible:
            for word in forbidden | {"original"}:
                assert word.lower() not in p.name.lower(), p
        text = (study_dir / "study.json").read_text()
        for word in forbidden:
            assert word not in text, word
        study = json.loads(text)
        assert "seed" not in study  # with the seed and the code the draw could be replayed
        items = study["items"]
        assert "original" not in json.dumps(items)  # the reference's name only appears in the questions
        types = set()
        for p in (study_dir / "items").glob("*.nrrd"):
            header = nrrd_header(p)
            keys = {line.split(":")[0] for line in header.splitlines()[1:] if line and not line.startswith("#")}
            assert keys <= {"type", "dimension", "space", "sizes", "space directions", "kinds", "endian",
                            "encoding", "space origin"}, keys
            assert ":=" not in header
            types.add(header.split("type: ")[1].split("\n")[0])
            fields = "\n".join(line for line in header.splitlines() if not line.startswith("#"))
            for word in forbidden:
                assert word not in fields, (p, word)
            data = p.read_bytes()
            gz = data[len(header) + 2:]
            assert gz[:2] == b"\x1f\x8b" and not gz[3] & 0x18  # gzip stream without a file name or comment
        assert types == {"short"}  # int16 for every variant: the voxel type reveals nothing


def test_geometry_difference_is_warned(tmp_path, manifest):
    summary = create_study(manifest, tmp_path / "q", "protocol", 5)
    assert any(w["code"] == "GEOMETRY_DIFFERS" for w in summary["warnings"])  # source has 2 mm slices
    summary = create_study(manifest, tmp_path / "s", "single", 5)
    assert not summary["warnings"]


# ----------------------------------------------------------------------------- answers
def test_reader_file_stems_are_distinct_and_safe():
    names = ["alice", "Alice", "ALICE", "al ice", "al_ice", "../../etc/passwd", "Dr. Ärzt", "李", "a" * 150]
    stems = [reader_file_stem(n) for n in names]
    assert len(set(stems)) == len(names)
    assert stems[0] == "alice"
    for s in stems:
        assert set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") and len(s) <= 70
    with pytest.raises(BadInputError):
        reader_file_stem("  ")


def test_answers_validated_revised_and_resumed(tmp_path, manifest):
    create_study(manifest, tmp_path / "s", "single", 1)
    s = ReaderSession(tmp_path / "s", "Reader One")
    assert s.index == 0 and s.n == 7
    with pytest.raises(BadInputError, match="0 to 5"):
        s.record({"score": 6})
    with pytest.raises(BadInputError):
        s.record({"score": 2.5})
    first = s.record({"score": 1}, time_spent_s=3.5, window={"width": 1200, "level": -500})
    assert first["revision"] == 0 and first["window"] == {"width": 1200.0, "level": -500.0}
    s.go(1)
    s.record({"score": 4})
    s.go(0)
    rev = s.record({"score": 5}, time_spent_s=1.0)
    assert rev["revision"] == 1
    lines = A.read_lines(s.path)
    assert [line["score"] for line in lines] == [1, 4, 5]  # old lines kept
    again = ReaderSession(tmp_path / "s", "Reader One")
    assert again.answer(0)["score"] == 5  # the newest wins
    assert again.index == 2 and again.n_answered == 2
    for k in range(2, 7):
        again.go(k)
        again.record({"score": k % 6})
    assert again.complete and again.first_unanswered() is None
    # Another reader has a separate file and starts at the beginning.
    other = ReaderSession(tmp_path / "s", "reader one")
    assert other.path != again.path and other.index == 0


def test_pair_and_protocol_answers(tmp_path, manifest):
    create_study(manifest, tmp_path / "p", "pair", 1)
    s = ReaderSession(tmp_path / "p", "r")
    likert = {k: {"A": 4, "B": 2} for k in D.LIKERT_ITEMS}
    with pytest.raises(BadInputError, match="'original'"):
        s.record({"original": "C", "likert": likert})
    bad = dict(likert, noise={"A": 4})
    with pytest.raises(BadInputError, match="noise"):
        s.record({"original": "A", "likert": bad})
    assert s.record({"original": "B", "likert": likert})["original"] == "B"
    create_study(manifest, tmp_path / "q", "protocol", 1)
    q = ReaderSession(tmp_path / "q", "r")
    with pytest.raises(BadInputError, match="thickness"):
        q.record({"protocol": "kernel=sharp,dose=0.25"})
    rec = q.record({"protocol": {"kernel": "B70f", "dose": 0.25, "thickness": 2}})
    from CTNormalizeLib.protocols import kernel_class

    assert rec["guess"] == {"kernel": kernel_class("B70f"), "dose": 0.25, "thickness": 2.0}
    # a guess outside the study's choices was recorded, then could only be scored wrong
    offered = q.study["questions"]["protocol"]
    assert 0.37 not in offered["dose"]
    with pytest.raises(BadInputError, match="not one of this study's choices"):
        q.record({"protocol": {"kernel": offered["kernel"][0], "dose": 0.37, "thickness": offered["thickness"][0]}})


def test_torn_last_line_is_skipped_and_repaired(tmp_path, manifest):
    create_study(manifest, tmp_path / "s", "single", 1)
    s = ReaderSession(tmp_path / "s", "r")
    s.record({"score": 3})
    with open(s.path, "ab") as f:
        f.write(b'{"item": "00')  # what a power cut mid-write could leave
    s2 = ReaderSession(tmp_path / "s", "r")
    assert s2.n_answered == 1 and s2.index == 1
    s2.record({"score": 2})
    lines = A.read_lines(s2.path)
    assert [line["score"] for line in lines] == [3, 2]


CHILD = textwrap.dedent("""
    import sys, time
    from CTNormalizeLib.readerstudy import ReaderSession
    s = ReaderSession(sys.argv[1], "crash test")
    print("start", s.index, flush=True)
    while not s.complete:
        s.record({"score": s.index % 6}, time_spent_s=0.01)
        print("saved", s.items[s.index]["id"], flush=True)
        s.go(s.first_unanswered() if s.first_unanswered() is not None else s.index)
        time.sleep(float(sys.argv[2]))
    print("complete", flush=True)
    time.sleep(60)
""")


def test_answers_survive_sigkill_and_resume(tmp_path):
    manifest = make_manifest(tmp_path / "data", n_cases=12, protocols=False)
    create_study(manifest, tmp_path / "s", "single", 2)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "s"), "0.05"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    saved = []
    try:
        assert proc.stdout.readline().startswith("start 0")
        while len(saved) < 5:
            line = proc.stdout.readline()
            assert line.startswith("saved"), line
            saved.append(line.split()[1])
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up, no flush at exit
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    resumed = ReaderSession(tmp_path / "s", "crash test")
    answered = set(resumed.answers)
    assert set(saved) <= answered  # everything reported saved is on disk
    assert len(answered) <= len(saved) + 1  # at most the answer in flight
    assert resumed.index == len(answered) and resumed.items[resumed.index]["id"] not in answered
    # The killed reader finishes in a new process.
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "s"), "0"],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().split() == ["start", str(len(answered))]
        lines = [proc.stdout.readline().strip() for _ in range(12 - len(answered) + 1)]
        assert lines[-1] == "complete"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    final = ReaderSession(tmp_path / "s", "crash test")
    assert final.complete and len(A.read_lines(final.path)) == 12


# ----------------------------------------------------------------------------- CLI
def _cli(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "CTNormalizeLib", *map(str, args)], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_cli_create_status_analyze(tmp_path, manifest):
    out = tmp_path / "study"
    res = _cli("study", "create", "--manifest", manifest, "--design", "single", "--seed", 4,
               "--per-reader", "--readers", "ann,bob", "-o", out, "--json")
    summary = json.loads(res.stdout)
    assert summary["n_items"] == 14
    key = _key(out)
    for reader, perfect in (("ann", True), ("bob", False)):
        s = ReaderSession(out, reader)
        for k in range(s.n):
            it = s.go(k)
            is_orig = key["readers"][reader][it["id"]]["variant"] == "original"
            s.record({"score": (5 if is_orig else 0) if perfect else (0 if is_orig else 5)}, time_spent_s=2.0,
                     window={"width": 1500, "level": -600})
    status = json.loads(_cli("study", "status", out, "--json").stdout)
    assert status["readers"]["ann"] == {**status["readers"]["ann"], "answered": 7, "total": 7, "complete": True}
    assert "ann: 7/7" in _cli("study", "status", out).stdout
    report = tmp_path / "report.html"
    res = _cli("study", "analyze", out, "-o", report, "--json")
    result = json.loads(res.stdout)
    assert result["readers"]["ann"]["accuracy"] == 1.0 and result["readers"]["ann"]["auc"] == 1.0
    assert result["readers"]["bob"]["accuracy"] == 0.0 and result["readers"]["bob"]["auc"] == 0.0
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 2 and "ROC curves" in page and "Per case" in page
    bad = _cli("study", "create", "--manifest", tmp_path / "none.csv", "--design", "single", "--seed", 1,
               "-o", tmp_path / "x", check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    assert _cli("study", "analyze", out, check=False).returncode == 2


def test_crop_to_common_extent():
    from CTNormalizeLib.readerstudy.storage import crop_to_common_extent
    from CTNormalizeLib.volume import Volume

    a = Volume(np.arange(10 * 4 * 4).reshape(10, 4, 4), spacing=(1.0, 0.5, 0.5), origin=(0.0, 0.0, 0.0))
    # b starts two slices later and has one slice more at the end; same voxel grid.
    b = Volume(a.hu[2:] + 0.0, spacing=(1.0, 0.5, 0.5), origin=(0.0, 0.0, 2.0))
    ca, cb = crop_to_common_extent([a, b])
    assert ca.hu.shape == cb.hu.shape == (8, 4, 4) and ca.origin == cb.origin == (0.0, 0.0, 2.0)
    assert np.array_equal(ca.hu, cb.hu)  # the same physical voxels
    misaligned = Volume(a.hu, spacing=(1.0, 0.5, 0.5), origin=(0.0, 0.0, 0.4))
    assert crop_to_common_extent([a, misaligned]) is None
    other_spacing = Volume(a.hu[::2], spacing=(2.0, 0.5, 0.5))
    assert crop_to_common_extent([a, other_spacing]) is None


def test_slice_count_difference_is_cropped_away(tmp_path):
    manifest = make_manifest(tmp_path / "data", n_cases=3, variants=("original", "normalized"), protocols=False)
    rows = list(csv.DictReader(open(manifest)))
    for r in rows:  # normalized one slice shorter, as on a resampled z grid
        p = manifest.parent / r["normalized"]
        img = sitk.ReadImage(str(p))
        sitk.WriteImage(img[:, :, :7], str(p))
    summary = create_study(manifest, tmp_path / "s", "pair", 1)
    assert summary["n_cases_cropped"] == 3 and not summary["warnings"]
    sizes = {sitk.ReadImage(str(p)).GetSize() for p in (tmp_path / "s" / "items").glob("*.nrrd")}
    assert sizes == {(32, 32, 7)}
    summary = create_study(manifest, tmp_path / "t", "pair", 1, crop=False)
    assert len(summary["warnings"]) == 3 and summary["warnings"][0]["code"] == "GEOMETRY_DIFFERS"


def test_blinded_images_share_one_value_range(tmp_path):
    """An original's air sits on -1024 and a normalized scan's noise goes below it: the lowest value told
    them apart. Both are stored in the same clipped range."""
    from CTNormalizeLib import Volume, read_volume
    from CTNormalizeLib.readerstudy.storage import BLIND_RANGE_HU, write_blinded_volume

    rng = np.random.default_rng(0)
    original = np.maximum(rng.normal(-1000.0, 20.0, (4, 16, 16)), -1024.0)
    normalized = rng.normal(-1000.0, 20.0, (4, 16, 16)) + np.where(np.arange(16) == 3, 4200.0, 0.0)
    ranges = []
    for name, hu in (("a", original), ("b", normalized)):
        write_blinded_volume(Volume(hu.astype(np.float32), (1.0, 1.0, 1.0)), tmp_path / f"{name}.nrrd")
        back = read_volume(tmp_path / f"{name}.nrrd").hu
        ranges.append((float(back.min()), float(back.max()) if name == "b" else None))
    assert ranges[0][0] == ranges[1][0] == BLIND_RANGE_HU[0] and ranges[1][1] == BLIND_RANGE_HU[1]


def test_a_clean_texture_variant_is_warned_at_creation(tmp_path):
    """Readers recognise a clean-texture (denoised) image by its missing noise; the normalized variant's header says
    which texture it has, and creating the study said nothing."""
    data = tmp_path / "data"
    manifest = make_manifest(data, n_cases=2, protocols=False)
    for i in range(2):  # the normalized images as `normalize` writes them, with the default clean texture
        path = data / f"normalized_PATIENT-{i:02d}.nrrd"
        img = sitk.ReadImage(str(path))
        img.SetMetaData("ctnormalize_texture", "clean")
        sitk.WriteImage(img, str(path))
    summary = create_study(manifest, tmp_path / "s", "pair", 1)  # the pair design shows both variants of every case
    (w,) = [w for w in summary["warnings"] if w["code"] == "CLEAN_TEXTURE_VARIANT"]
    assert "'normalized'" in w["message"] and "2 case(s)" in w["message"] and "--texture target" in w["message"]
