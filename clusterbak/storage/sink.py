"""Write a stream to a local file, optionally zstd-compressed, and read it back as a stream.

FileSink creates the file with O_EXCL and mode 0o600 (a backup holds every key; nothing else may read it, and an
existing file is never overwritten), hashes the *stored* bytes with sha256, counts raw and stored sizes, and
fsyncs the file and its directory on close. abort() removes the partial file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import zstandard

from clusterbak.durable import fsync_dir as _fsync_dir  # the name storage/local.py imports from here
from clusterbak.errors import StepFailed, UsageError, VerifyError

Compression = Literal["zstd", "none"]
COMPRESSIONS: tuple[str, ...] = ("zstd", "none")
# Level 2, not 3: on RDB payloads (values already LZF-compressed by Redis) level 3 ran at only ~110-170 MB/s on
# one core, slower than the BGSAVE it overlaps; level 2 is ~1.7-2.1x faster for 3-5% larger files (measured on
# a 266 MB shard of 100 KB text values: 156 -> 334 MB/s, ratio 1.21 -> 1.18; 75 MB of small keys: 133 -> 231
# MB/s, ratio 2.73 -> 2.61). Level 1 is faster still but ~20% larger on small keys. Threads: no (RSS x4).
ZSTD_LEVEL = 2
COMPRESS_CHOICES: tuple[str, ...] = ("auto", "zstd", "none")  # what a backup may be asked for; auto picks per file
SAMPLE_BYTES = 1 << 20  # --compress auto: how much of a file's start decides how it is stored
POOR_RATIO = 0.9  # auto stores a file raw when zstd keeps more than this fraction of the sample (random data)
_BUFFER = 1 << 20
_ZSTD_PIECE = 1 << 16  # compressed input per decompress() call: bounds the output held at once


@dataclass(frozen=True, slots=True)
class StoredFile:
    path: str
    raw_size: int
    stored_size: int
    sha256_stored: str
    compression: str


def choose_compression(sample: bytes | bytearray | memoryview) -> str:
    """--compress auto for one file, from its first bytes: "none" when zstd would barely shrink them (random or
    already-compressed values: the CPU is better spent on the next BGSAVE), else "zstd"."""
    if not len(sample):
        return "none"
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(bytes(sample))
    return "none" if len(packed) > POOR_RATIO * len(sample) else "zstd"


def stored_name(base: str, compression: str) -> str:
    """A stored file's name: `.zst` added when it is zstd-compressed."""
    return base + ".zst" if compression == "zstd" else base


class FileSink:
    """One file being written. Use as a context manager (an exception aborts) or call close()/abort()."""

    def __init__(self, path: str | os.PathLike[str], compress: str = "zstd", level: int = ZSTD_LEVEL) -> None:
        if compress not in COMPRESSIONS:
            raise UsageError(f"unknown compression {compress!r}: use one of {', '.join(COMPRESSIONS)}")
        self.path = Path(path)
        self.compression = compress
        self._raw = 0
        self._stored = 0
        self._sha = hashlib.sha256()
        self._zstd = (
            zstandard.ZstdCompressor(level=level, threads=0, write_checksum=True).compressobj()
            if compress == "zstd"
            else None
        )
        try:  # O_EXCL: never overwrite, never follow a planted symlink; the mode applies only to a new file
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StepFailed(f"{self.path}: cannot create: {exc.strerror}") from exc
        self._file = os.fdopen(fd, "wb", buffering=_BUFFER)
        self._state = "open"  # open -> closed | aborted

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._state != "open":
            raise RuntimeError(f"{self.path}: write() on a {self._state} sink")
        self._raw += len(chunk)
        self._put(self._zstd.compress(chunk) if self._zstd is not None else chunk)

    def _put(self, data: bytes | bytearray | memoryview) -> None:
        if not len(data):
            return
        self._sha.update(data)
        self._stored += len(data)
        try:
            self._file.write(data)
        except OSError as exc:
            raise StepFailed(f"{self.path}: write failed: {exc.strerror}") from exc

    def close(self) -> StoredFile:
        """Flush, fsync, close; the file is complete. A failure here aborts (removes the file) and raises."""
        if self._state != "open":
            raise RuntimeError(f"{self.path}: close() on a {self._state} sink")
        try:
            if self._zstd is not None:
                self._put(self._zstd.flush())
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            _fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise StepFailed(f"{self.path}: cannot finish the file: {exc.strerror}") from exc
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return StoredFile(str(self.path), self._raw, self._stored, self._sha.hexdigest(), self.compression)

    def abort(self) -> None:
        """Close and remove the partial file; does nothing once close() has succeeded."""
        if self._state == "closed":
            return
        self._state = "aborted"
        try:
            self._file.close()
        except OSError:
            pass
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> FileSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.close()


def hash_file(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of the bytes on disk, i.e. of the stored (possibly compressed) file."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise StepFailed(f"{path}: cannot read: {exc.strerror}") from exc


def iter_stored_file(path: str | os.PathLike[str], compression: str, chunk: int = _BUFFER) -> Iterator[bytes]:
    """Yield the original (decompressed) bytes of a stored file, streaming.

    A zstd file must consist of whole frames: a truncated or corrupt one raises VerifyError naming the path
    (zstandard's stream readers would silently stop early at a truncation).
    """
    if compression not in COMPRESSIONS:
        raise UsageError(f"unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    return _iter_stored(path, compression, chunk)


def _iter_stored(path: str | os.PathLike[str], compression: str, chunk: int) -> Iterator[bytes]:
    try:
        with open(path, "rb") as fh:
            if compression == "none":
                while data := fh.read(chunk):
                    yield data
            else:
                yield from _zstd_chunks(fh.read, chunk, path)
    except OSError as exc:
        raise StepFailed(f"{path}: cannot read: {exc.strerror}") from exc


def _zstd_chunks(read: Callable[[int], bytes], chunk: int, path: str | os.PathLike[str]) -> Iterator[bytes]:
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj(write_size=_ZSTD_PIECE)
    in_frame = False  # True while a frame has started but not ended
    frames = 0
    try:
        while data := read(chunk):
            view = memoryview(data)
            for i in range(0, len(view), _ZSTD_PIECE):
                piece: bytes | memoryview = view[i : i + _ZSTD_PIECE]
                while len(piece):
                    in_frame = True
                    out = dobj.decompress(piece)
                    if out:
                        yield out
                    if not dobj.eof:
                        break
                    frames, in_frame = frames + 1, False
                    piece, dobj = dobj.unused_data, dctx.decompressobj(write_size=_ZSTD_PIECE)
    except zstandard.ZstdError as exc:
        raise VerifyError(f"{path}: corrupt zstd data: {exc}") from exc
    if in_frame or frames == 0:
        raise VerifyError(f"{path}: truncated zstd data (the last frame does not end)")
