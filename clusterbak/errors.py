"""Typed errors and the one table that maps them to exit codes.

0 ok, 1 unexpected (a bug), 2 usage, 3 refused by a precondition, 4 a step failed, 130 interrupted (Ctrl-C, SIGTERM).
The parsers of what nodes and sets hand us (CLUSTER NODES, nodes.conf, AOF manifests) raise their own types here
too, so a malformed reply or file is a clear line and its exit code, never "a bug".
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_PRECONDITION = 3
EXIT_STEP_FAILED = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C stopped


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


class TopologyParseError(PreconditionError):
    """A CLUSTER NODES reply (or line) that does not have the shape Redis writes: nothing was done yet."""


class StepFailed(ClusterbakError):
    """A step of an executed plan failed."""

    exit_code = EXIT_STEP_FAILED


class RunCancelled(StepFailed):
    """A worker stopped because another part of the run failed or was interrupted: never the cause to report."""


class TransportError(StepFailed):
    """A transport could not read, write or run something; the message names host and path."""


class VerifyError(StepFailed):
    """Stored bytes do not match what they claim to be; the message names the file."""


class NodesConfError(VerifyError):
    """A nodes.conf (stored in a set) that does not have the shape Redis writes, or names a node the restore does
    not place. (A malformed --map NEW_ADDR is turned into a UsageError by the planner.)"""


class AofManifestError(VerifyError):
    """A multi-part AOF manifest (a node's, or one stored in a set) that is malformed."""


class Interrupted(ClusterbakError):
    """Ctrl-C or SIGTERM stopped a run; the message says the state it left and how to go on."""

    exit_code = EXIT_INTERRUPTED


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, ClusterbakError):
        return exc.exit_code
    return EXIT_UNEXPECTED
