"""Exception classes with the codes and exit codes of the process protocol.

See DESIGN.md section 4: every error the engine raises on purpose carries a
``code`` (sent in the JSON ``error`` event) and an ``exit_code`` (the CLI's
process exit status).
"""

import errno


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


class NoLungsError(BadInputError):
    """No lungs could be found, so a lung measure cannot be made (exit 2)."""

    code = "NO_LUNGS"
    exit_code = 2


class NoModelError(CTNormalizeError):
    """No model covers the requested protocol pair (exit 3)."""

    code = "NO_MODEL"
    exit_code = 3


class ResourceExhaustedError(CTNormalizeError):
    """Out of memory (GPU or host) even after fallbacks (exit 4)."""

    code = "OOM"
    exit_code = 4


class DiskFullError(ResourceExhaustedError):
    """No space left for an output (or the file grew past the allowed size) (exit 4)."""

    code = "NO_SPACE"
    exit_code = 4


class CancelledError(CTNormalizeError):
    """The run was cancelled by SIGTERM/SIGINT or by the caller (exit 130)."""

    code = "CANCELLED"
    exit_code = 130


class InternalError(CTNormalizeError):
    """A bug or an unexpected failure (exit 1)."""

    code = "INTERNAL"
    exit_code = 1


# errno values that mean "the output does not fit": full disk, quota, file-size limit.
_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def from_os_error(exc: OSError, action: str = "write") -> CTNormalizeError:
    """The protocol error for an ``OSError`` met while reading or writing a file.

    A full disk, a quota or a file-size limit is a :class:`DiskFullError` (exit 4); any
    other file-system refusal (read-only, permission, missing folder, name too long) is a
    :class:`BadInputError` (exit 2). The message is one sentence naming the file.
    """
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE_ERRNOS:
        return DiskFullError(f"Cannot {action}{where}: {reason}; free some space or choose another folder.")
    return BadInputError(f"Cannot {action}{where}: {reason}.")
