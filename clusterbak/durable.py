"""Making a local write survive a crash: the one fsync of a directory, for every layer that writes files here
(the local transport, the backup set's files, run state and journals, AOF pin records)."""

from __future__ import annotations

import os


def fsync_dir(directory: str | os.PathLike[str], best_effort: bool = False) -> None:
    """fsync `directory`, so a file created or renamed in it is still there after a crash. `best_effort`: a
    filesystem that cannot open or fsync a directory is passed over (the rename itself is still atomic);
    otherwise its OSError is raised for the caller to name."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not best_effort:
            raise
    finally:
        os.close(fd)
