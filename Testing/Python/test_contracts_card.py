"""The model card contract: every shipped card is valid, and damaged cards are refused with a reason."""

import json
import shutil

import pytest

from CTNormalizeLib.contracts.card import card_problems
from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.models.registry import model_dirs, read_package
from CTNormalizeLib.resources import resources_dir

SHIPPED = sorted(p for p in (resources_dir() / "Models").iterdir() if (p / "card.json").is_file())


def test_models_are_shipped():
    assert len(SHIPPED) >= 2


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_cards_are_valid(folder):
    card = json.loads((folder / "card.json").read_text())
    assert card_problems(card) == []
    read_package(folder).verify()  # and the weights match the card's sha256


@pytest.mark.parametrize("damage, expected", [
    (lambda c: c.pop("sha256"), "missing 'sha256'"),
    (lambda c: c.__setitem__("sha256", "xyz"), "64 lower-case hex"),
    (lambda c: c["io"].__setitem__("hu_window", [900, -1100]), "hu_window"),
    (lambda c: c["io"]["scale"].__setitem__("divisor", 0), "io.scale"),
    (lambda c: c["io"].__setitem__("frontend", "magic"), "io.frontend"),
    (lambda c: c["covers"].__setitem__("conditioning", "signature"), "signature-conditioned"),
    (lambda c: c.__setitem__("selection", {"figures": {"l1_gap_closed": {"in_distribution": "high"}}}), "selection"),
    (lambda c: c.__setitem__("selection", {"figures": {}, "heldout_kernel_change_directions": ["up"]}),
     "heldout_kernel_change_directions"),
    (lambda c: c.__setitem__("selection", {"figures": {}, "heldout_kernel_change_directions": [["smoothing"]]}),
     "heldout_kernel_change_directions"),
])
def test_damaged_card_is_refused(tmp_path, damage, expected):
    src = SHIPPED[0]
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    card = json.loads((dst / "card.json").read_text())
    damage(card)
    (dst / "card.json").write_text(json.dumps(card))
    with pytest.raises(BadInputError, match="not a valid model card") as e:
        read_package(dst)
    assert expected in e.value.message
