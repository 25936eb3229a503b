"""The Slicer module's process helper: JSON-lines parsing, state machine, cancel and error
paths, with real child processes. Plain Python: needs neither Qt nor slicer-core."""

from __future__ import annotations

import json
import re
import os
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "CTNormalize"))

from CTNormalizeSlicerLib import engine  # noqa: E402
from CTNormalizeSlicerLib.process import (  # noqa: E402
    EngineRun, RunState, format_eta, kill_process_tree, parse_event_line, parse_json_document)


def _script(tmp_path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, "-u", str(path)]


def test_parse_event_line():
    assert parse_event_line('{"event": "progress", "fraction": 0.5}') == {"event": "progress", "fraction": 0.5}
    assert parse_event_line('  {"event":"done","output":"/x"}  ') == {"event": "done", "output": "/x"}
    for line in ("WARNING root: {odd}", "", "[1, 2]", '{"no_event": 1}', '{"event": 3}', "{not json}",
                 "ctnormalize: error [BAD_INPUT]: x"):
        assert parse_event_line(line) is None, line


def test_parse_json_document_skips_log_lines():
    doc = {"a": [1, 2], "b": {"c": "d"}}
    lines = ["WARNING x: starting"] + json.dumps(doc, indent=2).splitlines() + ["INFO done"]
    assert parse_json_document(lines) == doc
    assert parse_json_document(json.dumps(doc).splitlines()) == doc
    assert parse_json_document(["nothing here"]) is None


def test_format_eta():
    assert format_eta(None) == ""
    assert format_eta(4.4) == "4 s"
    assert format_eta(65) == "1 min 05 s"
    assert format_eta(3720) == "1 h 02 min"


def test_successful_run_goes_through_states(tmp_path):
    args = _script(tmp_path, """
        import json, sys, time
        def ev(**k): print(json.dumps(k), flush=True)
        ev(event="started", steps=2, device="cpu", method="classical:auto", model_sha256=None)
        print("INFO a log line on stderr", file=sys.stderr, flush=True)
        ev(event="progress", step=1, steps=2, stage="denoise", fraction=0.5, eta_s=1.5)
        ev(event="warning", code="NO_COVERING_MODEL", message="classical instead")
        ev(event="done", output="/tmp/out.nrrd", report={"qc": {"ok": True}})
    """)
    seen, finished, cleaned = [], [], []
    run = EngineRun(args, on_event=lambda r, e: seen.append((e["event"], r.state)),
                    on_finished=finished.append, cleanup=lambda: cleaned.append(1))
    assert run.state is RunState.IDLE
    run.start()
    assert run.wait(timeout=30) is RunState.IMPORT_RESULTS
    kinds = [k for k, _ in seen]
    assert kinds[:2] == ["started", "log"] or kinds[0] == "started"
    assert {"progress", "warning", "done", "import", "log"} <= set(kinds)
    assert dict(seen)["progress"] is RunState.IN_PROGRESS
    assert run.stage == "denoise" and run.eta_s == 1.5 and run.fraction == 1.0
    assert run.warnings == [{"code": "NO_COVERING_MODEL", "message": "classical instead"}]
    assert run.done_event.report["qc"] == {"ok": True}
    assert "INFO a log line on stderr" in run.log_lines
    assert not finished and not cleaned  # waiting for the owner to import
    run.set_completed()
    assert run.state is RunState.COMPLETED and finished == [run] and cleaned == [1]
    run.set_completed()  # idempotent: callbacks run once
    assert finished == [run] and cleaned == [1]


def test_auto_complete(tmp_path):
    run = EngineRun(_script(tmp_path, "print('hello')"), auto_complete=True).start()
    assert run.wait(timeout=30) is RunState.COMPLETED
    assert run.output_lines == ["hello"]


def test_error_event_gives_engine_message(tmp_path):
    args = _script(tmp_path, """
        import json, sys
        print(json.dumps({"event": "error", "code": "BAD_INPUT", "message": "Unknown kernel 'Q9'."}), flush=True)
        sys.exit(2)
    """)
    cleaned = []
    run = EngineRun(args, cleanup=lambda: cleaned.append(1)).start()
    assert run.wait(timeout=30) is RunState.FAILED
    assert (run.returncode, run.error_code, run.error_message) == (2, "BAD_INPUT", "Unknown kernel 'Q9'.")
    assert cleaned == [1]


def test_an_event_outside_the_contract_fails_the_run_with_a_reason(tmp_path):
    """Events are read through CTNormalizeLib.contracts.events: one this module does not know (an engine of
    another version) is a protocol error the run fails with, never keys guessed from a dict."""
    args = _script(tmp_path, """
        import json
        print(json.dumps({"event": "started", "steps": 1, "device": "cpu", "method": "x", "new_key": 1}), flush=True)
        print(json.dumps({"event": "done", "output": "/o", "report": {}}), flush=True)
    """)
    run = EngineRun(args).start()
    assert run.wait(timeout=30) is RunState.FAILED and run.error_code == "PROTOCOL"
    assert "new_key" in run.error_message and "different versions" in run.error_message


def test_crash_without_event_reports_exit_code_and_log_tail(tmp_path):
    args = _script(tmp_path, "import sys\nprint('Traceback: boom', file=sys.stderr)\nsys.exit(4)\n")
    run = EngineRun(args).start()
    assert run.wait(timeout=30) is RunState.FAILED
    assert run.error_code == "OOM" and "exit code 4" in run.error_message and "boom" in run.error_message


def test_real_engine_usage_error(tmp_path):
    """The real engine, asked for a missing input: BAD_INPUT event and exit 2."""
    out = tmp_path / "out.nrrd"
    cmd = engine.normalize_command(str(tmp_path / "missing.nrrd"), str(out), target="emphysema-reference",
                                   device="cpu")
    run = EngineRun(cmd, env=engine.engine_environment("cpu"), cwd=engine.engine_package_parent()).start()
    assert run.wait(timeout=120) is RunState.FAILED
    assert run.returncode == 2 and run.error_code in ("BAD_INPUT", "NOT_CT")
    assert run.error_message and not out.exists()


_TREE = """
    import json, signal, subprocess, sys, time
    {handler}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print("CHILD", child.pid, flush=True)
    print(json.dumps({{"event": "started", "steps": 1, "device": "cpu", "method": "x"}}), flush=True)
    for i in range(1200):
        print(json.dumps({{"event": "progress", "step": 1, "steps": 1, "stage": "work", "fraction": i / 1200,
                          "eta_s": 99}}), flush=True)
        time.sleep(0.1)
"""


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm-honoured", "sigterm-ignored"])
def test_cancel_kills_the_whole_tree(tmp_path, graceful):
    handler = ("signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))" if graceful
               else "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    cleaned, finished = [], []
    run = EngineRun(_script(tmp_path, _TREE.format(handler=handler)), cleanup=lambda: cleaned.append(1),
                    on_finished=finished.append).start()
    deadline = time.monotonic() + 30
    while run.poll() is not RunState.IN_PROGRESS or run.progress_event is None:
        assert time.monotonic() < deadline, run.output_lines
        time.sleep(0.05)
    grandchild = int(next(line.split()[1] for line in run.log_lines if line.startswith("CHILD")))
    assert psutil.pid_exists(grandchild)
    t0 = time.monotonic()
    run.cancel(timeout=1.0 if not graceful else 5.0)
    assert run.state is RunState.CANCEL_REQUESTED
    assert time.monotonic() - t0 < 0.5  # the caller (the GUI thread) is not blocked
    assert run.wait(timeout=30) is RunState.CANCELLED
    assert time.monotonic() - t0 < 10
    assert run.error_code == "CANCELLED" and finished == [run] and cleaned == [1]
    gone = not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    assert gone, "the grandchild survived the cancel"
    run.cancel()  # no-op once finished


def test_launch_failure_fails_and_cleans(tmp_path):
    cleaned = []
    run = EngineRun([str(tmp_path / "no-such-python"), "-m", "x"], cleanup=lambda: cleaned.append(1))
    with pytest.raises(OSError):
        run.start()
    assert run.state is RunState.FAILED and cleaned == [1]
    with pytest.raises(RuntimeError):
        run.start()


def test_kill_process_tree_on_gone_pid():
    kill_process_tree(2 ** 22 + 12345)  # no such process: no error


def test_engine_command_and_environment():
    cmd = engine.normalize_command("/in.nrrd", "/out.nrrd", source="kernel=B70f", target="lung-detail",
                                   method="mtf_ratio", device="cuda", python="/py")
    assert cmd[:4] == ["/py", "-m", "CTNormalizeLib", "normalize"]
    i = cmd.index
    assert cmd[i("-o") + 1] == "/out.nrrd" and cmd[i("--source") + 1] == "kernel=B70f"
    assert cmd[i("--target") + 1] == "lung-detail" and cmd[i("--method") + 1] == "mtf_ratio"
    assert cmd[i("--device") + 1] == "cuda" and cmd[i("--progress") + 1] == "json"
    env = engine.engine_environment("cpu")
    assert env["CUDA_VISIBLE_DEVICES"] == "-1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == engine.engine_package_parent()
    assert (Path(engine.engine_package_parent()) / "CTNormalizeLib" / "__init__.py").is_file()
    assert "CUDA_VISIBLE_DEVICES" not in engine.engine_environment("auto")
    like = engine.normalize_command("/in.nrrd", "/out.nrrd", target="", target_like="/ref.nrrd", python="/py")
    assert like[like.index("--target-like") + 1] == "/ref.nrrd" and "--target" not in like
    both = engine.normalize_command("/in.nrrd", "/out.nrrd", target="thickness=1", target_like="/ref.nrrd", python="/py")
    assert both[both.index("--target") + 1] == "thickness=1" and "--target-like" in both
    assert "--target-like" not in cmd


def test_cmake_lists_every_module_script():
    """slicerMacroBuildScriptedModule installs only what is listed."""
    text = (ROOT / "CTNormalize" / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"\$\{MODULE_NAME\}(SlicerLib/\w+\.py)", text))
    present = {f"SlicerLib/{p.name}" for p in (ROOT / "CTNormalize" / "CTNormalizeSlicerLib").glob("*.py")}
    assert listed == present
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest" in text
    top = (ROOT / "CMakeLists.txt").read_text()
    assert 'EXTENSION_DEPENDS "PyTorch"' in top and "add_subdirectory(CTNormalize)" in top
    for needed in ("CTNormalizeLib/*.py", "Resources/Presets/*", "Resources/Models/*", "Resources/Radiomics/*",
                   "Resources/UI/*.ui", "Resources/Icons/*.png"):
        assert needed in top, needed
    assert (ROOT / "Resources" / "UI" / "CTNormalize.ui").is_file()
    assert (ROOT / "Resources" / "Icons" / "CTNormalize.png").is_file()


def test_installed_layout_finds_engine_and_resources(tmp_path):
    """The layout the CMake rules produce: qt-scripted-modules/{CTNormalize.py, CTNormalizeLib, Resources}."""
    import shutil
    import subprocess

    dest = tmp_path / "qt-scripted-modules"
    dest.mkdir()
    shutil.copy(ROOT / "CTNormalize" / "CTNormalize.py", dest)
    shutil.copytree(ROOT / "CTNormalize" / "CTNormalizeSlicerLib", dest / "CTNormalizeSlicerLib")
    shutil.copytree(ROOT / "CTNormalizeLib", dest / "CTNormalizeLib",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "Resources", dest / "Resources")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from CTNormalizeSlicerLib import engine; import CTNormalizeLib.resources as r; "
            "from CTNormalizeLib.protocols import load_presets; "
            "print(engine.engine_package_parent()); print(r.resources_dir()); print(len(load_presets()))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CTNORMALIZE_RESOURCES")}
    out = subprocess.run([sys.executable, "-c", code, str(dest)], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    parent, res, n = out.stdout.split()
    # The installed copy wins over the editable install of the source tree.
    assert Path(parent) == dest and Path(res) == dest / "Resources" and int(n) >= 1


def test_module_lib_finds_resources_and_engine_from_source_tree(tmp_path):
    import subprocess

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import CTNormalizeSlicerLib as L; "
            "L.ensure_engine_importable(); import importlib.util as u; print(L.resources_dir()); "
            "print(u.find_spec('CTNormalizeLib').origin)")
    # A bare interpreter (no editable install on the path): -S skips site-packages.
    out = subprocess.run([sys.executable, "-S", "-c", code, str(ROOT / "CTNormalize")], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    res, lib = out.stdout.split()
    assert Path(res) == ROOT / "Resources" and (Path(res) / "UI" / "CTNormalize.ui").is_file()
    assert Path(lib).parent == ROOT / "CTNormalizeLib"


def test_gpu_check_runs_in_a_child_without_importing_torch_here(monkeypatch):
    """Any ``import torch`` in this process is seen by the spy, even when an earlier test imported torch."""
    import builtins
    import importlib

    from CTNormalizeSlicerLib.logic import NormalizationLogic

    imported = []
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def spy_import(name, *a, **k):
        if name.split(".")[0] == "torch":
            imported.append(name)
        return real_import(name, *a, **k)

    def spy_import_module(name, *a, **k):
        if name.split(".")[0] == "torch":
            imported.append(name)
        return real_import_module(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", spy_import)
    monkeypatch.setattr(importlib, "import_module", spy_import_module)
    answers = []
    run = NormalizationLogic(python=sys.executable).startGpuCheck(answers.append)
    if run is not None:
        assert run.wait(timeout=120) is RunState.COMPLETED
    monkeypatch.undo()
    assert imported == []  # asked the child, not this process
    assert len(answers) == 1 and set(answers[0]) == {"cuda", "mps"}
    try:
        import torch
    except ImportError:
        assert answers[0] == {"cuda": False, "mps": False}
    else:
        assert answers[0]["cuda"] == torch.cuda.is_available()
        assert answers[0]["mps"] == bool(torch.backends.mps.is_available())


def test_kill_without_psutil_stops_the_child(monkeypatch, tmp_path):
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    t0 = time.monotonic()
    kill_process_tree(child.pid, timeout=2.0)
    assert child.wait(timeout=10) != 0 and time.monotonic() - t0 < 5


def test_model_tooltip_from_card():
    from CTNormalizeSlicerLib.choices import model_tooltip

    class Package:
        name = "film-small"
        card = {"architecture": {"name": "conditioned"}, "metrics": {"gap_closed": 0.61, "nested": {"a": 1}},
                "sha256": "ab" * 32, "intended_use": "Research use, not for diagnosis."}

        def coverage_text(self):
            return "source [kernel=sharp] -> targets [kernel=smooth]"

    tip = model_tooltip(Package())
    assert "film-small" in tip and "kernel=sharp" in tip and "conditioned" in tip
    assert "gap_closed=0.61" in tip and "abababab" in tip and "not for diagnosis" in tip


def test_qt_poller_rearms_until_the_run_ends(tmp_path, monkeypatch):
    """The Qt adapter, with a fake qt.QTimer: it polls, reports, and stops re-arming at the end."""
    import types

    from CTNormalizeSlicerLib.process import QtPoller

    pending = []
    fake_qt = types.SimpleNamespace(QTimer=types.SimpleNamespace(singleShot=lambda ms, fn: pending.append((ms, fn))))
    monkeypatch.setitem(sys.modules, "qt", fake_qt)
    args = _script(tmp_path, """
        import json, time
        for i in range(3):
            print(json.dumps({"event": "progress", "step": 1, "steps": 1, "stage": "s", "fraction": i / 3,
                              "eta_s": 1}), flush=True)
            time.sleep(0.1)
    """)
    run = EngineRun(args, auto_complete=True).start()
    ticks = []
    poller = QtPoller(run, interval_ms=50, on_tick=lambda r: ticks.append(r.fraction)).start()
    deadline = time.monotonic() + 30
    while pending:
        assert time.monotonic() < deadline
        ms, fn = pending.pop(0)
        time.sleep(ms / 1000)
        fn()
    assert run.state is RunState.COMPLETED and ticks[-1] == 1.0 and len(ticks) >= 2
    assert poller.interval_ms == 50


def test_killed_by_the_system_is_not_reported_as_cancelled(tmp_path):
    """An engine killed by the OOM killer (SIGKILL) is a failure that says so, not "Cancelled"."""
    if os.name == "nt":
        pytest.skip("POSIX signals")
    args = _script(tmp_path, """
        import json, os, signal
        print(json.dumps({"event": "started", "steps": 1, "device": "cpu", "method": "x"}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run = EngineRun(args).start()
    assert run.wait(timeout=30) is RunState.FAILED
    assert run.error_code == "KILLED" and "stopped by the system" in run.error_message
    assert "Cancel" not in run.error_message


def test_undecodable_bytes_do_not_end_the_reader(tmp_path):
    """A pipe opened in a narrow locale encoding (cp1252-like) still reads the engine's UTF-8."""
    import subprocess

    args = _script(tmp_path, """
        import json, sys
        sys.stdout.buffer.write(b"log line with odd bytes \\xff\\xfe \\xc3\\xa9\\n"); sys.stdout.flush()
        print(json.dumps({"event": "progress", "step": 1, "steps": 1, "stage": "x", "fraction": 0.5}), flush=True)
        print(json.dumps({"event": "done", "output": "/o", "report": {}}), flush=True)
    """)

    def ascii_launcher(a, env, cwd):
        return subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                                encoding="ascii")  # raises on any non-ASCII byte if read as is

    run = EngineRun(args, launcher=ascii_launcher).start()
    assert run.wait(timeout=30) is RunState.IMPORT_RESULTS, run.log_lines
    assert run.done_event is not None and run.progress_event.fraction == 0.5
    assert any("é" in line for line in run.log_lines)


def test_json_result_lines_are_not_logged(tmp_path):
    args = _script(tmp_path, """
        import json
        print("a warning on stderr", flush=True)
        print(json.dumps({"results": [{"laa_percent": 1.0}]}), flush=True)
    """)
    logged = []
    run = EngineRun(args, on_event=lambda r, e: logged.append(e.get("line")) if e["event"] == "log" else None,
                    auto_complete=True).start()
    assert run.wait(timeout=30) is RunState.COMPLETED
    assert logged == ["a warning on stderr"]
    assert parse_json_document(run.output_lines[1:]) == {"results": [{"laa_percent": 1.0}]}


def test_abandon_stops_the_tree_and_cleans_up_synchronously(tmp_path):
    folder = tmp_path / "patient-data"
    folder.mkdir()
    (folder / "input.nrrd").write_text("x")
    args = _script(tmp_path, """
        import json, time
        print(json.dumps({"event": "started", "steps": 1, "device": "cpu", "method": "x"}), flush=True)
        time.sleep(60)
    """)
    finished = []
    run = EngineRun(args, on_finished=finished.append,
                    cleanup=lambda: __import__("shutil").rmtree(folder)).start()
    while run.poll() is not RunState.IN_PROGRESS:
        time.sleep(0.05)
    pid = run.proc.pid
    run.abandon("Cancelled: the scene was closed.")
    assert run.state is RunState.CANCELLED and finished == [run]
    assert not folder.exists()  # removed before abandon() returned
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_module_raises_user_messages_through_the_translation_function():
    """Errors a dialog shows are user strings: a literal inside _() (CTNormalizeSlicerLib.i18n in the Logic), so
    that Slicer's extractor finds them. Only programming errors (a wrong argument from code) stay as they are."""
    import ast

    programming = ("layout must be", "device must be one of", "This run was already started", "Unknown window preset",
                   "orientation must be one of")
    bare = []
    for path in sorted((ROOT / "CTNormalize" / "CTNormalizeSlicerLib").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args):
                continue
            arg = node.exc.args[0]
            if isinstance(arg, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                text = ast.unparse(arg)
                if not any(p in text for p in programming) and not text.startswith("_("):
                    bare.append(f"{path.name}:{node.lineno}: {text[:70]}")
    assert not bare, "\n".join(bare)
