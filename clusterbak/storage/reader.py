"""File-like readers over stored (maybe compressed) files, for transports' write_from().

`VerifiedReader` hashes while it is read: the stored bytes against the manifest's sha256 and the decompressed bytes
against its raw_sha256. A mismatch raises VerifyError at the end of the stream, before the transport renames its
temp file into place, so a file changed after `verify` is never placed.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from clusterbak.errors import PreconditionError, VerifyError
from clusterbak.model.manifest import StoredFile
from clusterbak.storage.repository import StoredSet
from clusterbak.storage.sink import _BUFFER, _zstd_chunks, iter_stored_file
from clusterbak.storage.stages import HashingRead, chunks_reader, decrypted_chunks

_progress = threading.local()


@contextmanager
def reporting_bytes(callback: Callable[[int], None]) -> Iterator[None]:
    """Every reader used in this thread reports each chunk's size to `callback` as it hands it out
    (restore progress)."""
    previous = getattr(_progress, "callback", None)
    _progress.callback = callback
    try:
        yield
    finally:
        _progress.callback = previous


def report_bytes(size: int) -> None:
    """Count `size` bytes as handed out in this thread without a read: a drill's hard-linked copy (progress)."""
    callback = getattr(_progress, "callback", None)
    if callback is not None:
        callback(size)


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
    difference from the manifest (size, stored sha256, raw sha256). Works on any repository's StoredSet."""

    def __init__(self, stored: StoredSet, record: StoredFile) -> None:
        super().__init__(verified_chunks(stored, record))


def verified_chunks(stored: StoredSet, record: StoredFile, what: str = "changed after it was verified",
                    outcome: str = ": not placed") -> Iterator[bytes]:
    """stored bytes -> (age decrypt with the set's identities) -> (zstd) -> original bytes, every hash checked."""
    label = stored.label(record.path)
    if record.encryption != "none" and not stored.identities:
        raise PreconditionError(f"{label} is encrypted: give --identity FILE to read it")
    counted = HashingRead(stored.open(record.path))
    raw = hashlib.sha256()
    read: Callable[[int], bytes] = counted.read
    if record.encryption != "none":
        read = chunks_reader(decrypted_chunks(counted.read, list(stored.identities), label))
    if record.compression == "none":
        chunks = iter(lambda: read(_BUFFER), b"")
    else:
        chunks = _zstd_chunks(read, _BUFFER, label)
    for data in chunks:
        raw.update(data)
        yield data
    while counted.read(_BUFFER):  # age may stop before the end of a damaged object: hash all of it
        pass
    if counted.size != record.stored_size or counted.sha.hexdigest() != record.sha256:
        raise VerifyError(f"{label}: {what} (sha256 or size of the stored bytes differs from the manifest){outcome}")
    if record.raw_sha256 is not None and raw.hexdigest() != record.raw_sha256:
        raise VerifyError(f"{label}: decompressed sha256 differs from the manifest{outcome}")
