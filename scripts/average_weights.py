"""Write a model package whose weights are the uniform average of other packages' (stochastic weight averaging).

Usage (from the repository root)::

    .venv/bin/python scripts/average_weights.py PKG PKG [PKG ...] -o OUT --name NAME [--chain-from NAME]

The packages must hold the same network (e.g. the continued denoisers ctn-denoise-v2b, -v2c,
-v2d). The new package starts from one ingredient's NLM blend and flips (``--chain-from``,
default the last); choose them for it with ``scripts/choose_nlm_blend.py OUT`` and judge it
with the benchmarks like any trained package (``CTNormalizeLib/train/weight_average.py``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packages", nargs="+", help="package folders (card.json + model.safetensors)")
    ap.add_argument("-o", "--out", required=True, help="the new package's folder (must not exist)")
    ap.add_argument("--name", required=True, help="the new model's name")
    ap.add_argument("--chain-from", help="the ingredient whose chain settings it starts from (default: the last)")
    args = ap.parse_args(argv)
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.train.weight_average import average_packages

    names = " ".join(shlex.quote(Path(p).name) for p in args.packages)
    command = (f"scripts/average_weights.py {names} -o OUT --name {shlex.quote(args.name)}"
               + (f" --chain-from {shlex.quote(args.chain_from)}" if args.chain_from else ""))
    try:
        out = average_packages(args.packages, args.out, args.name, chain_from=args.chain_from, command=command)
    except (BadInputError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model package written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
