"""Sinks that a transport streams one attempt of a file into: store it and verify it in the same pass."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from clusterbak.errors import VerifyError
from clusterbak.rdb.verify import RdbReport, RdbVerifier
from clusterbak.storage.repository import SetFile, open_stored, open_stored_as
from clusterbak.storage.sink import StoredFile


class VerifyingRdbSink:
    """One read of the bytes: RDB structure + CRC64 + sha256 while compressing into the set.

    One sha256 per byte: a file stored as it is (no compression, no encryption) has its raw sha256 equal to its
    stored sha256, which the storage layer computes anyway, so this sink stops its own hash as soon as the storage
    has chosen to store the file raw (--compress auto decides after its first MiB; none: at once) and records the
    stored one as the raw one too. Compressed or encrypted files get both, as before (issue 14: the second pass cost
    ~0.6 s of CPU per 350 MB on 2 cores).

    `timings` adds up where this attempt's time went: verify_s (parsing, CRC64, sha256 of the raw bytes), store_s
    (compressing, encrypting, writing) and fsync_s (closing the stored file: its last block, fsync of the file and
    its directory, or completing an S3 upload)."""

    def __init__(self, target_for: Callable[[str], SetFile | Path], compress: str, name: str, on_bytes=None) -> None:
        self._as_is = False  # True once the storage chose to keep the bytes as they are (raw, unencrypted)

        def chosen(compression: str) -> SetFile | Path:  # the storage names the file once it has chosen
            target = target_for(compression)
            encrypted = isinstance(target, SetFile) and target.writer.encryption is not None
            self._as_is = compression == "none" and not encrypted
            return target

        self._sha: hashlib._Hash | None = hashlib.sha256()
        self.verifier = RdbVerifier(name, hash_bytes=False)
        self.file = open_stored_as(chosen, compress, hashes_raw=True)  # an encrypted file's plaintext: our hash
        self.on_bytes = on_bytes
        self.stored: StoredFile | None = None
        self.report: RdbReport | None = None
        self.timings = {"verify_s": 0.0, "store_s": 0.0, "fsync_s": 0.0}

    def write(self, chunk: bytes) -> None:
        t0 = time.perf_counter()
        self.verifier.feed(chunk)
        if self._sha is not None and not self._as_is:
            self._sha.update(chunk)
        t1 = time.perf_counter()
        self.file.write(chunk)
        if self._as_is:
            self._sha = None  # every byte so far (a held sample too) went to the stored file's hash: that one counts
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
        raw = self._sha.hexdigest() if self._sha is not None else None
        self.stored = stored = self.file.close(raw_sha256=raw)
        if raw is not None:
            sha = raw
        elif stored.compression == "none" and getattr(stored, "encryption", None) is None:
            sha = stored.sha256_stored  # the bytes stored are the bytes received
        else:  # cannot happen: the hash stops only for a file stored as it is
            raise RuntimeError(f"{report.name}: raw sha256 not kept for a {stored.compression} file")
        self.report = replace(report, sha256=sha)
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

        self.file = open_stored_as(target_for, compress, hashes_raw=True)  # an encrypted file's plaintext: ours
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
        self.raw_sha256 = self.digest.hexdigest()
        self.stored = self.file.close(raw_sha256=self.raw_sha256)

    def abort(self) -> None:
        self.file.abort()
