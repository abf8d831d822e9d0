"""User-facing errors.

Every error a user can cause is raised as a :class:`BertkitError` subclass whose message is one
line naming the file, flag or column at fault and the fix.  The CLI prints it without a traceback
(``--debug`` shows one) and exits with the class's exit code: 1 for bad data, 2 for bad usage.
"""


class BertkitError(Exception):
    """Base class; exit code 1."""

    exit_code = 1


class DataError(BertkitError):
    """The input data is missing, malformed or inconsistent (exit 1)."""

    exit_code = 1


class UsageError(BertkitError):
    """Flags, config values or paths given by the user are wrong (exit 2)."""

    exit_code = 2


class PeerLost(BertkitError):
    """Another process of a distributed run died, so this one cannot go on (exit 1)."""

    exit_code = 1
