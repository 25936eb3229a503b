"""Entry point of ``ctnormalize``.

Subcommands are discovered from the ``cmd_*.py`` modules of this package. Each defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Errors derived
from :class:`CTNormalizeError` become a clear message on stderr (or a JSON ``error``
event, see :mod:`.events`) and the error's exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from ..version import __version__
from ..errors import CTNormalizeError


def _commands():
    from .. import cli

    mods = []
    for info in pkgutil.iter_modules(cli.__path__):
        if info.name.startswith("cmd_"):
            mods.append(importlib.import_module(f"{cli.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctnormalize",
        description="Normalize CT scans across acquisition protocols (kernel, dose, slice thickness).",
    )
    parser.add_argument("--version", action="version", version=f"ctnormalize {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except CTNormalizeError as exc:
        print(f"ctnormalize: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ctnormalize: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
