"""File-like readers over stored (maybe compressed) files, for transports' write_from().

`VerifiedReader` hashes while it is read: the stored bytes against the manifest's sha256 and the decompressed bytes
against its raw_sha256. A mismatch raises VerifyError at the end of the stream, before the transport renames its
temp file into place, so a file changed after `verify` is never placed.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from clusterbak.errors import StepFailed, VerifyError
from clusterbak.model.manifest import StoredFile
from clusterbak.storage.backupset import set_file
from clusterbak.storage.sink import _BUFFER, _zstd_chunks, iter_stored_file


_progress = threading.local()


@contextmanager
def reporting_bytes(callback: Callable[[int], None]) -> Iterator[None]:
    """Every reader used in this thread reports each chunk's size to `callback` as it hands it out (restore progress)."""
    previous = getattr(_progress, "callback", None)
    _progress.callback = callback
    try:
        yield
    finally:
        _progress.callback = previous


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
            callback = getattr(_progress, "callback", None)
            if callback is not None:
                callback(len(self._buf))
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class StoredReader(_ChunkReader):
    """The original bytes of a stored file (no hash check: for callers that verified it in the same pass)."""

    def __init__(self, path, compression: str) -> None:
        super().__init__(iter_stored_file(path, compression))


class VerifiedReader(_ChunkReader):
    """The original bytes of a set's stored file, hashed as they stream; raises VerifyError at the end on any
    difference from the manifest (size, stored sha256, raw sha256)."""

    def __init__(self, set_dir: Path, record: StoredFile) -> None:
        super().__init__(_verified_chunks(set_dir, record))


def _verified_chunks(set_dir: Path, record: StoredFile) -> Iterator[bytes]:
    path = set_file(set_dir, record.path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StepFailed(f"{path}: cannot read: {exc.strerror}") from exc
    stored, raw = hashlib.sha256(), hashlib.sha256()
    size = 0
    with os.fdopen(fd, "rb") as fh:

        def read(n: int) -> bytes:
            nonlocal size
            data = fh.read(n)
            stored.update(data)
            size += len(data)
            return data

        if record.compression == "none":
            while data := read(_BUFFER):
                raw.update(data)
                yield data
        else:
            for data in _zstd_chunks(read, _BUFFER, path):
                raw.update(data)
                yield data
    if size != record.stored_size or stored.hexdigest() != record.sha256:
        raise VerifyError(f"{path} changed after it was verified (sha256 or size differs from the manifest): "
                          "not placed")
    if record.raw_sha256 is not None and raw.hexdigest() != record.raw_sha256:
        raise VerifyError(f"{path}: decompressed sha256 differs from the manifest: not placed")
