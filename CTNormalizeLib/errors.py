"""Exception classes with the codes and exit codes of the process protocol.

See DESIGN.md section 4: every error the engine raises on purpose carries a
``code`` (sent in the JSON ``error`` event) and an ``exit_code`` (the CLI's
process exit status).
"""


class CTNormalizeError(Exception):
    """Base class: an error with a protocol code and a process exit code."""

    code = "INTERNAL"
    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadInputError(CTNormalizeError):
    """The input file, spec or option is unusable (exit 2)."""

    code = "BAD_INPUT"
    exit_code = 2


class NotCTError(BadInputError):
    """The input is not a CT (wrong modality or not HU-like) (exit 2)."""

    code = "NOT_CT"
    exit_code = 2


class NoModelError(CTNormalizeError):
    """No model covers the requested protocol pair (exit 3)."""

    code = "NO_MODEL"
    exit_code = 3


class ResourceExhaustedError(CTNormalizeError):
    """Out of memory (GPU or host) even after fallbacks (exit 4)."""

    code = "OOM"
    exit_code = 4


class CancelledError(CTNormalizeError):
    """The run was cancelled by SIGTERM/SIGINT or by the caller (exit 130)."""

    code = "CANCELLED"
    exit_code = 130


class InternalError(CTNormalizeError):
    """A bug or an unexpected failure (exit 1)."""

    code = "INTERNAL"
    exit_code = 1
