"""A drill places each RDB shard once: its other nodes get a hard link to that verified copy.

A drill's lab is one host and is thrown away afterwards. Reading, decompressing, hashing and writing the same
shard again for each of its replicas only doubles the CPU of the longest part of the drill's RTO. The nodes never
share a write: Redis replaces dump.rdb by writing a temp file and renaming it, and never writes it in place.
A transport that cannot link (SSH, Docker), or a link the filesystem refuses, gets a copy of its own. A restore
into a real cluster never shares: each node there is its own host.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from clusterbak.errors import ClusterbakError, StepFailed
from clusterbak.storage.reader import report_bytes


class PlacedOnce:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: dict[str, tuple[threading.Event, list]] = {}  # key -> (done, [placed path, error])
        self.linked: dict[str, str] = {}  # a node's path -> the copy it is a link of

    def place(self, key: str, path: str, transport, write: Callable[[], object], size: int) -> None:
        """Put the shard file `key` at `path`: `write()` for its first node, a hard link for the others (each
        waits for the first copy; a node's first placer is already running, so no wait can deadlock). A link
        reports its `size` bytes to the thread's progress, as a read copy would."""
        link = getattr(transport, "link", None)
        if link is None:
            write()
            return
        with self._lock:
            entry = self._first.get(key)
            first = entry is None
            if entry is None:
                entry = self._first[key] = (threading.Event(), [None, None])
        done, placed = entry
        if first:
            try:
                write()
                placed[0] = path
            except BaseException as exc:
                placed[1] = exc
                raise
            finally:
                done.set()
            return
        done.wait()
        if placed[0] is None:  # the first copy failed: this node fails the same way (a damaged set stays exit 4)
            failed = placed[1]
            if isinstance(failed, ClusterbakError):
                raise type(failed)(str(failed)) from failed
            raise StepFailed(f"{path}: not placed: the first copy of its shard failed ({failed})")
        if link(placed[0], path):
            with self._lock:
                self.linked[path] = placed[0]
            report_bytes(size)
            return
        write()
