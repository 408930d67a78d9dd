"""Typed errors and the one table that maps them to exit codes.

0 ok, 1 unexpected, 2 usage, 3 refused by a precondition, 4 a step failed.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_PRECONDITION = 3
EXIT_STEP_FAILED = 4


class ClusterbakError(Exception):
    """Base of every error clusterbak expects; the message is one line for the operator."""

    exit_code = EXIT_UNEXPECTED


class UsageError(ClusterbakError):
    """Bad flags, a malformed file the user gave us."""

    exit_code = EXIT_USAGE


class InventoryError(UsageError):
    """The inventory file is malformed or cannot place a node."""


class PreconditionError(ClusterbakError):
    """The world is not in a state where the command may proceed."""

    exit_code = EXIT_PRECONDITION


class ConnectError(PreconditionError):
    """A Redis node could not be reached, authenticated to, or is not a cluster node."""


class AccessRefused(ConnectError):
    """The node answered but refuses this user a command clusterbak needs (NOPERM): a precondition (exit 3) even
    mid-run, since nothing about the cluster broke and the fix is the user's ACL."""


class StepFailed(ClusterbakError):
    """A step of an executed plan failed."""

    exit_code = EXIT_STEP_FAILED


class RunCancelled(StepFailed):
    """A worker stopped because another part of the run failed or was interrupted: never the cause to report."""


class TransportError(StepFailed):
    """A transport could not read, write or run something; the message names host and path."""


class VerifyError(StepFailed):
    """Stored bytes do not match what they claim to be; the message names the file."""


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, ClusterbakError):
        return exc.exit_code
    return EXIT_UNEXPECTED
