"""Static checks of the CTNormalizeReaderStudy scripted module (no Qt here): UI names, CMake list."""

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "CTNormalizeReaderStudy"


def _ui_names():
    tree = ET.parse(MODULE / "Resources" / "UI" / "CTNormalizeReaderStudy.ui")
    return {w.get("name") for w in tree.iter("widget")}


def test_every_ui_name_the_widget_uses_exists():
    source = (MODULE / "CTNormalizeReaderStudy.py").read_text()
    used = set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", source))
    # Names built in loops: score{k}Button, {item}{side}SpinBox.
    used |= {f"score{k}Button" for k in range(6)}
    used |= {f"{i}{s}SpinBox" for i in ("noise", "sharpness", "artifacts", "diagnostic") for s in "AB"}
    missing = used - _ui_names()
    assert not missing, f"widgets used in CTNormalizeReaderStudy.py but absent from the .ui: {sorted(missing)}"


def test_module_parses_and_has_the_four_classes():
    tree = ast.parse((MODULE / "CTNormalizeReaderStudy.py").read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"CTNormalizeReaderStudy", "CTNormalizeReaderStudyWidget", "CTNormalizeReaderStudyLogic",
            "CTNormalizeReaderStudyTest"} <= classes


def test_cmake_lists_every_python_file_and_resource():
    cmake = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "CTNormalizeReaderStudy")
    for path in list(MODULE.rglob("*.py")) + list(MODULE.rglob("*.ui")):
        rel = path.relative_to(MODULE).as_posix()
        assert rel in cmake, f"{rel} is not listed in CTNormalizeReaderStudy/CMakeLists.txt (it would not be installed)"


def test_logic_never_mentions_the_key():
    for path in MODULE.rglob("*.py"):
        assert "key.json" not in path.read_text() and "load_key" not in path.read_text(), path
