"""Is a backup destination usable? Asked before any BGSAVE, so a bad --dest costs nothing on the cluster."""

from __future__ import annotations

import os
from pathlib import Path

from clusterbak.errors import PreconditionError


def check_writable_destination(root: str | Path) -> Path:
    """The directory sets would be written to, or a PreconditionError naming the path and the fix.
    Creates nothing: the nearest existing ancestor must be a directory this user may create entries in."""
    root = Path(root).absolute()
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        if probe == root:
            raise PreconditionError(f"--dest {root} is a file, not a directory; pass a directory")
        raise PreconditionError(f"--dest {root}: {probe} is a file, so nothing can be created under it; "
                                "pass a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            why = "is on a read-only filesystem"
        else:
            why = "is not writable by this user"
        raise PreconditionError(f"--dest {root}: {probe} {why}; pass a writable directory or fix the mount/permissions")
    return root


def check_existing_destination(root: str | Path) -> Path:
    """For commands that read sets (list, check, prune): a missing or non-directory --dest is an error, never
    an empty listing (a typo in a monitoring script must not look like "no backups")."""
    root = Path(root).absolute()
    if not root.exists():
        raise PreconditionError(f"--dest {root} does not exist; check the path (no backup was ever written there)")
    if not root.is_dir():
        raise PreconditionError(f"--dest {root} is not a directory; pass the directory holding backup sets")
    return root
