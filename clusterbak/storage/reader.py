"""A file-like reader over a stored (maybe compressed) file, for transports' write_from()."""

from __future__ import annotations

import io
from typing import Iterator

from clusterbak.storage.sink import iter_stored_file


class StoredReader(io.RawIOBase):
    def __init__(self, path, compression: str) -> None:
        self._chunks: Iterator[bytes] = iter_stored_file(path, compression)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
