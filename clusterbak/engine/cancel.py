"""Cancelling a run's other workers the moment one fails."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cancel_on_failure(cancel: threading.Event) -> Iterator[None]:
    """Set `cancel` when the body raises - entered inside a per-host lock, before that lock is let go, so a queued
    shard sees the cancel before it can start a save or rewrite that nobody will use."""
    try:
        yield
    except BaseException:
        cancel.set()
        raise
