"""Sinks that a transport streams one attempt of a file into: store it and verify it in the same pass."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from clusterbak.errors import VerifyError
from clusterbak.rdb.verify import RdbReport, RdbVerifier
from clusterbak.storage.repository import SetFile, open_stored, open_stored_as
from clusterbak.storage.sink import StoredFile


class VerifyingRdbSink:
    """One read of the bytes: RDB structure + CRC64 + sha256 while compressing into the set.

    `timings` adds up where this attempt's time went: verify_s (parsing, CRC64, sha256 of the raw bytes), store_s
    (compressing, encrypting, writing) and fsync_s (closing the stored file: its last block, fsync of the file and
    its directory, or completing an S3 upload)."""

    def __init__(self, target_for: Callable[[str], SetFile | Path], compress: str, name: str, on_bytes=None) -> None:
        self.file = open_stored_as(target_for, compress)
        self.verifier = RdbVerifier(name)
        self.on_bytes = on_bytes
        self.stored: StoredFile | None = None
        self.report: RdbReport | None = None
        self.timings = {"verify_s": 0.0, "store_s": 0.0, "fsync_s": 0.0}

    def write(self, chunk: bytes) -> None:
        t0 = time.perf_counter()
        self.verifier.feed(chunk)
        t1 = time.perf_counter()
        self.file.write(chunk)
        self.timings["verify_s"] += t1 - t0
        self.timings["store_s"] += time.perf_counter() - t1
        if self.on_bytes:
            self.on_bytes(len(chunk))

    def close(self) -> None:
        t0 = time.perf_counter()
        try:
            report = self.verifier.finish()
        except VerifyError:
            self.file.abort()
            raise
        t1 = time.perf_counter()
        self.stored = self.file.close()
        self.report = report
        self.timings["verify_s"] += t1 - t0
        self.timings["fsync_s"] += time.perf_counter() - t1

    def abort(self) -> None:
        self.file.abort()


class TextFileSink:
    """A small file (nodes.conf) stored as it is, with a check of its shape on close."""

    def __init__(self, path: SetFile | Path, name: str, node_id: str) -> None:
        self.file = open_stored(path, "none")
        self.name, self.node_id = name, node_id
        self.parts: list[bytes] = []
        self.stored: StoredFile | None = None

    def write(self, chunk: bytes) -> None:
        self.parts.append(chunk)
        self.file.write(chunk)

    def close(self) -> None:
        text = b"".join(self.parts).decode(errors="replace")
        lines = [line.split() for line in text.splitlines() if line.strip()]
        myself = [p for p in lines if len(p) > 2 and "myself" in p[2].split(",")]
        if not any(p[:2] == ["vars", "currentEpoch"] for p in lines) or not myself:
            self.file.abort()
            raise VerifyError(f"{self.name} is not a cluster nodes.conf (no myself line or vars line)")
        if myself[0][0] != self.node_id:
            self.file.abort()
            raise VerifyError(f"{self.name} belongs to node {myself[0][0][:8]}, not {self.node_id[:8]}: "
                              "cluster-config-file or data_dir points at another node's file")
        self.stored = self.file.close()

    def abort(self) -> None:
        self.file.abort()


class HashingSink:
    """A file stored (maybe compressed) with the sha256 of its raw bytes: for AOF files."""

    def __init__(self, target_for: Callable[[str], SetFile | Path], compress: str, on_bytes=None) -> None:
        import hashlib

        self.file = open_stored_as(target_for, compress)
        self.digest = hashlib.sha256()
        self.on_bytes = on_bytes
        self.stored: StoredFile | None = None
        self.raw_sha256: str | None = None

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.file.write(chunk)
        if self.on_bytes:
            self.on_bytes(len(chunk))

    def close(self) -> None:
        self.stored = self.file.close()
        self.raw_sha256 = self.digest.hexdigest()

    def abort(self) -> None:
        self.file.abort()
