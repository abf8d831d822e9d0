"""User-facing errors.

Every error a user can cause is raised as a :class:`BertkitError` subclass whose message is one
line naming the file, flag or column at fault and the fix.  The CLI prints it without a traceback
(``--debug`` shows one) and exits with the class's exit code: 1 for bad data, 2 for bad usage.
"""

import errno
import os


class BertkitError(Exception):
    """Base class; exit code 1."""

    exit_code = 1


class DataError(BertkitError):
    """The input data is missing, malformed or inconsistent (exit 1)."""

    exit_code = 1


class UsageError(BertkitError):
    """Flags, config values or paths given by the user are wrong (exit 2)."""

    exit_code = 2


class WriteError(BertkitError):
    """A write failed for want of room: the disk or quota is full, or a file-size limit (``ulimit -f``)
    was reached (exit 1).  The message names the file or directory being written."""

    exit_code = 1


# errno -> what a user reads; libraries that write on their own (safetensors in Rust, torch.save in C++)
# wrap the OSError in their own exception, whose text still carries the errno
_NO_ROOM = {errno.ENOSPC: "no space left on the device",
            errno.EFBIG: "file too large (a file-size limit, see ulimit -f)",
            errno.EDQUOT: "disk quota exceeded"}


def no_room(e: BaseException) -> str | None:
    """Why ``e`` is a write that ran out of room (see :data:`_NO_ROOM`), or None for any other error."""
    if isinstance(e, OSError) and e.errno in _NO_ROOM:
        return _NO_ROOM[e.errno]
    text = str(e)
    for code, reason in _NO_ROOM.items():
        if f"os error {code})" in text or f"[Errno {code}]" in text or os.strerror(code) in text:
            return reason
    return None


def raise_no_room(e: BaseException, path) -> None:
    """Raise a one-line :class:`WriteError` naming ``path`` (from ``e``) when ``e`` is a write that ran out
    of room; otherwise return, for the caller to re-raise ``e``."""
    reason = no_room(e)
    if reason:
        raise WriteError(f"cannot write {path}: {reason}") from e


class PeerLost(BertkitError):
    """Another process of a distributed run died, so this one cannot go on (exit 1)."""

    exit_code = 1
