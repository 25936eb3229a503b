"""Entry point of ``ctnormalize``.

Subcommands are discovered from the ``cmd_*.py`` modules of this package. Each defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Errors derived
from :class:`CTNormalizeError` become a clear message on stderr (or a JSON ``error``
event, see :mod:`.events`; a command run with ``--json`` also prints the refusal as its one
JSON object, ``{"error": ...}``) and the error's exit code; an ``OSError`` from the file system
becomes one too (a full disk exit 4, anything else exit 2). A closed stdout ends the
command quietly with exit 141.
"""

from __future__ import annotations

# Only light imports at module level: the process installs its signal handler in main(), and
# a Ctrl-C before that ends in a traceback (argparse, logging and the commands come after it).
import os
import signal
import sys

from .. import cancellation
from ..version import __version__
from ..errors import CancelledError, CTNormalizeError, from_os_error


def _commands():
    import importlib
    import pkgutil

    from .. import cli

    mods = []
    for info in pkgutil.iter_modules(cli.__path__):
        if info.name.startswith("cmd_"):
            mods.append(importlib.import_module(f"{cli.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def _json_error_parser():
    """argparse whose usage errors are also one JSON ``error`` event on stdout (``--progress json``).

    A process that reads JSON lines (the Slicer module) then learns why the command stopped, as it does
    for every other refusal; the usage text still goes to stderr and the exit code stays 2.
    """
    import argparse

    class JsonErrorParser(argparse.ArgumentParser):
        def error(self, message):
            from .events import dumps

            sys.stdout.write(dumps({"event": "error", "code": "BAD_INPUT",
                                    "message": f"{self.prog}: {message}"}) + "\n")
            sys.stdout.flush()
            super().error(message)

    return JsonErrorParser


def _wants_json(argv) -> bool:
    args = list(sys.argv[1:] if argv is None else argv)
    return "--progress=json" in args or any(a == "--progress" and b == "json" for a, b in zip(args, args[1:]))


def build_parser(json_errors: bool = False) -> "argparse.ArgumentParser":  # noqa: F821
    import argparse

    parser = (_json_error_parser() if json_errors else argparse.ArgumentParser)(
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


def main(argv=None, *, process: bool = False) -> int:
    """Run ``ctnormalize`` and return the exit code (see the module docstring).

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).
    process : bool
        This run is the whole process (:func:`process_main`): its signal handlers stay installed
        after the run, a signal during shutdown is ignored and a cancelled run ends the process at
        once. Otherwise (a program that embeds the command line) the caller's handlers are put back.
    """
    # SIGTERM/SIGINT become CancelledError, so every command removes its staged outputs. The process's
    # handlers are installed at its first step (importing the commands takes a second), so a cancel
    # never ends in a traceback; the process keeps them at the end (see below), an embedder gets its own back.
    try:
        with cancellation.on_signals(restore=not process):
            code = _main(argv)
            if code == 0 and cancellation.pending():  # recorded while the run tidied up (cancellation.holding)
                raise CancelledError(cancellation.reason())
            late = cancellation.late_cancel()
            if process:
                # The run is over: a signal now only ends its shutdown sooner (it is ignored, since
                # Python puts back the default handler, which kills, while it finalizes).
                for s in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(s, signal.SIG_IGN)
    except BrokenPipeError:
        code, late = _broken_pipe(), None
    except Exception as exc:
        if not isinstance(exc, CancelledError) and not cancellation.pending():
            raise
        print(f"ctnormalize: {cancellation.reason() or 'cancelled'}", file=sys.stderr)
        code, late = CancelledError.exit_code, None
    except KeyboardInterrupt:
        print("ctnormalize: cancelled", file=sys.stderr)
        code, late = CancelledError.exit_code, None
    if late and code != CancelledError.exit_code:
        print(f"ctnormalize: {late}", file=sys.stderr)
    from ..interruptible import abandoned

    if process and (abandoned() or code == CancelledError.exit_code):
        # Cancelled: the outputs are already cleaned up. End now rather than in interpreter
        # shutdown, which waits for a worker thread still in a long C call (an import, a write
        # into a removed temp folder) and tears down torch (seconds).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    return code


def _main(argv=None) -> int:
    import logging

    parser = build_parser(json_errors=_wants_json(argv))
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
        with cancellation.holding():  # a second Ctrl-C now would only print the refusal twice
            return _report(cancellation.as_cancel(exc), _json_result(args))
    except KeyboardInterrupt:
        print("ctnormalize: cancelled", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except OSError as exc:
        if cancellation.pending():
            return _report(cancellation.as_cancel(exc), _json_result(args))
        return _report(from_os_error(exc, "read or write"), _json_result(args))


#: Exit status for a closed stdout (``ctnormalize ... | head -1``): 128 + SIGPIPE, as a shell
#: reports for a program ended by SIGPIPE.
EXIT_BROKEN_PIPE = 141


def _json_result(args) -> bool:
    """Whether the refusal is the command's one JSON object on stdout: ``--json`` as a flag (not a file
    name), unless the command printed its object before refusing (``info`` prints what it could read)."""
    return getattr(args, "json", None) is True and not getattr(args, "json_result_printed", False)


def _report(exc: CTNormalizeError, as_json: bool = False) -> int:
    """The refusal on stderr; with ``--json`` also as the one JSON object on stdout, so a reader of
    stdout learns why there is no result (``{"error": {"code", "message", "exit_code"}}``)."""
    try:
        print(f"ctnormalize: error [{exc.code}]: {exc.message}", file=sys.stderr)
    except BrokenPipeError:
        pass
    if as_json:  # after the text, so a closed stdout cannot swallow it
        from .events import dumps

        try:
            sys.stdout.write(dumps({"error": {"code": exc.code, "message": exc.message,
                                              "exit_code": exc.exit_code}}) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            _broken_pipe()  # nothing more to stdout (not even the flush at exit); the exit code stays the error's
    return exc.exit_code


def _broken_pipe() -> int:
    """The reader of stdout went away: end quietly (no traceback, nothing more written)."""
    try:
        # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def process_main():
    """The ``ctnormalize`` program and ``python -m CTNormalizeLib``: :func:`main` as the whole process."""
    sys.exit(main(process=True))


if __name__ == "__main__":
    process_main()
