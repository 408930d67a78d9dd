"""Stream stages a stored file passes through, the same for every repository.

Writing:  raw bytes -> (zstd) -> (age encrypt) -> sha256 of the stored bytes -> an ObjectWriter (a local file, or an
S3 multipart upload). Reading: an object's bytes -> sha256 of the stored bytes -> (age decrypt) -> (zstd) -> raw
bytes. age runs in pyrage (encrypt_io / decrypt_io pull from a reader and push to a writer); a helper thread and a
small bounded queue turn that into the push (write) and pull (iterate) shapes the engines use, so memory stays
bounded whatever the file size.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pyrage
import zstandard

from clusterbak.errors import StepFailed, UsageError, VerifyError

SCHEMES = ("none", "age")
_QUEUE_DEPTH = 3  # chunks between the caller and the age thread (each <= ~1 MiB)
_STALL = 600.0  # seconds a stage may wait on the other side before it gives up
_AGE_READ = 1 << 20  # what the age thread reads from the queue at once


class ObjectWriter(Protocol):
    """The end of a write pipeline: bytes go somewhere durable on close(); abort() leaves nothing behind."""

    label: str

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Encryption:
    """age recipients (public keys, `age1...`) every stored file of a set is encrypted to. Never secrets."""

    recipients: tuple[str, ...]

    def record(self) -> dict:
        return {"scheme": "age", "recipients": list(self.recipients)}


class _Stop(Exception):
    """Raised inside a pyrage callback to end its thread early (the other side gave up)."""


class _QueueReader(io.RawIOBase):
    """What pyrage reads from: chunks put on a queue by the writing side; None is the end."""

    def __init__(self, q: queue.Queue) -> None:
        self._q, self._buf, self._eof = q, memoryview(b""), False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._buf) and not self._eof:
            item = self._q.get(timeout=_STALL)
            if item is None:
                self._eof = True
            elif isinstance(item, _Stop):
                raise item
            else:
                self._buf = memoryview(item)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]  # a view: age reads in small pieces, and slicing bytes would copy the rest each time
        return n


class _CallbackWriter(io.RawIOBase):
    def __init__(self, fn: Callable[[bytes], None]) -> None:
        self._fn = fn

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        self._fn(data)
        return len(data)


class AgeEncryptor:
    """Push-shaped age encryption: write() plaintext, close() to finish; the ciphertext goes to `out` (called from
    the age thread). Any error on either side is raised to the caller by write() or close()."""

    def __init__(self, enc: Encryption, out: Callable[[bytes], None]) -> None:
        try:
            recipients = [pyrage.x25519.Recipient.from_str(r) for r in enc.recipients]
        except Exception as exc:  # noqa: BLE001 - pyrage raises its own types
            raise UsageError(f"not an age recipient: {exc}") from exc
        self._q: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(recipients, out), daemon=True, name="age-encrypt")
        self._thread.start()

    def _run(self, recipients, out) -> None:
        try:
            # age reads 8 KiB at a time: a 1 MiB buffer in C answers those, our reader is asked once per chunk
            # (65 Python calls for 64 MiB instead of 8193: ~12% of the age thread's CPU)
            source = io.BufferedReader(_QueueReader(self._q), buffer_size=_AGE_READ)
            pyrage.encrypt_io(source, _CallbackWriter(out), recipients)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._error = exc

    def _put(self, item) -> None:
        while True:
            if self._error is not None:
                raise _as_step(self._error, "age encryption failed")
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive() and self._error is None:
                    raise StepFailed("age encryption stopped unexpectedly") from None

    def write(self, data) -> None:
        if len(data):
            self._put(bytes(data))

    def close(self) -> None:
        self._put(None)
        self._thread.join(timeout=_STALL)
        if self._error is not None:
            raise _as_step(self._error, "age encryption failed")

    def abort(self) -> None:
        try:
            self._q.put_nowait(_Stop())
        except queue.Full:
            pass
        self._thread.join(timeout=5)


def _as_step(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, StepFailed):
        return exc
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, StepFailed):
        cause = cause.__cause__
    if isinstance(cause, StepFailed):
        return cause
    return StepFailed(f"{what}: {exc}")


@dataclass(frozen=True, slots=True)
class Written:
    """What a StoredSink wrote: sizes, the stored bytes' sha256 and, when only encryption changed the bytes
    (no compression), the plaintext sha256 (compressed files get theirs from the verifier of the raw stream)."""

    raw_size: int
    stored_size: int
    sha256_stored: str
    compression: str
    encryption: Encryption | None
    raw_sha256: str | None


class StoredSink:
    """raw -> (zstd) -> (age) -> sha256 -> ObjectWriter. close() returns Written; abort() removes the object.

    `hashes_raw`: the caller hashes the raw bytes of a file the sink transforms (the backup's verifying sinks do)
    and hands that sha256 to close(raw_sha256=...): an encrypted, uncompressed file then records it as its plaintext
    sha256 instead of this sink hashing the plaintext a second time (with age: two sha256 passes per byte, not
    three). A file stored as it is is hashed here as always: its stored sha256 is its raw one."""

    def __init__(self, out: ObjectWriter, compress: str, level: int, encryption: Encryption | None = None,
                 hashes_raw: bool = False) -> None:
        self.out, self.compression, self.encryption = out, compress, encryption
        self._raw = self._stored = 0
        self._sha = hashlib.sha256()
        plaintext = encryption is not None and compress == "none"  # the manifest records the plaintext's sha256
        self._needs_raw = plaintext and hashes_raw
        self._raw_sha = hashlib.sha256() if plaintext and not hashes_raw else None
        self._zstd = (zstandard.ZstdCompressor(level=level, threads=0, write_checksum=True).compressobj()
                      if compress == "zstd" else None)
        self._age = AgeEncryptor(encryption, self._put) if encryption is not None else None

    def write(self, chunk) -> None:
        self._raw += len(chunk)
        if self._raw_sha is not None:
            self._raw_sha.update(chunk)
        data = self._zstd.compress(chunk) if self._zstd is not None else chunk
        if self._age is not None:
            self._age.write(data)
        else:
            self._put(data)

    def _put(self, data) -> None:
        if not len(data):
            return
        self._sha.update(data)
        self._stored += len(data)
        self.out.write(data)

    def close(self, raw_sha256: str | None = None) -> Written:
        if self._needs_raw and raw_sha256 is None:
            self.abort()
            raise StepFailed(f"{self.out.label}: the raw bytes' sha256 was not handed over")
        try:
            if self._zstd is not None:
                tail = self._zstd.flush()
                self._age.write(tail) if self._age is not None else self._put(tail)
            if self._age is not None:
                self._age.close()
            self.out.close()
        except BaseException:
            self.abort()
            raise
        plain = self._raw_sha.hexdigest() if self._raw_sha is not None else raw_sha256 if self._needs_raw else None
        return Written(self._raw, self._stored, self._sha.hexdigest(), self.compression, self.encryption, plain)

    def abort(self) -> None:
        if self._age is not None:
            self._age.abort()
        self.out.abort()


# ---------------------------------------------------------------- reading


class HashingRead:
    """read(n) over a stored object's stream, counting and hashing what passes (the stored bytes)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read, self.size, self.sha = read, 0, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._read(n if n and n > 0 else 1 << 20)
        self.sha.update(data)
        self.size += len(data)
        return data


def decrypted_chunks(read: Callable[[int], bytes], identities: list, label: str) -> Iterator[bytes]:
    """Pull-shaped age decryption of the stream `read` gives; a wrong identity or damaged data is VerifyError."""
    out: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
    stop = threading.Event()
    result: dict = {}

    class _Reader(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            if stop.is_set():
                raise _Stop()
            try:
                data = read(len(b))
            except BaseException as exc:
                result["read_error"] = exc  # the store failed, not the decryption: report that
                raise
            b[: len(data)] = data
            return len(data)

    def push(data: bytes) -> None:
        while not stop.is_set():
            try:
                out.put(data, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Stop()

    def run() -> None:
        try:
            pyrage.decrypt_io(_Reader(), _CallbackWriter(push), identities)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            result["error"] = exc
        finally:
            while True:  # the end marker must get through even if the consumer is slow
                try:
                    out.put(None, timeout=0.5)
                    break
                except queue.Full:
                    if stop.is_set():
                        break

    thread = threading.Thread(target=run, daemon=True, name="age-decrypt")
    thread.start()
    try:
        while True:
            item = out.get(timeout=_STALL)
            if item is None:
                break
            yield item
        thread.join(timeout=_STALL)
        if "read_error" in result:
            raise _as_step(result["read_error"], f"{label}: reading failed")
        error = result.get("error")
        if isinstance(error, pyrage.DecryptError):
            raise VerifyError(f"{label}: cannot decrypt: {error} (is --identity the key this set was encrypted to?)")
        if error is not None:  # pyrage reports a damaged payload chunk as an I/O error
            raise VerifyError(f"{label}: cannot decrypt: {error} (the stored object is damaged)")
    finally:
        stop.set()
        thread.join(timeout=5)


def chunks_reader(chunks: Iterator[bytes]) -> Callable[[int], bytes]:
    """A read(n) function over an iterator of chunks (for the zstd stage after decryption)."""
    buf = bytearray()

    def read(n: int) -> bytes:
        while len(buf) < n:
            try:
                buf.extend(next(chunks))
            except StopIteration:
                break
        data = bytes(buf[:n])
        del buf[:n]
        return data

    return read
