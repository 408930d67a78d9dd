"""Where backup sets live: the Repository interface, and the pieces every backend shares.

A repository lists sets, opens one for writing (files go in through the stream stages of storage/stages.py),
commits it by writing manifest.json LAST (signed when a key is given: manifest.json.sig goes first), reads a
stored file back as a stream, and deletes a set. Two backends: LocalRepository (a directory; storage/local.py) and
S3Repository (`s3://bucket/prefix`; storage/s3.py). `--dest` picks one with open_repository().

Every set read goes through the one validated reader (storage.backupset.manifest_from_bytes ->
model.manifest.parse_manifest), and every stored-file name through model.names before it becomes a path or a key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from clusterbak.errors import PreconditionError, StepFailed
from clusterbak.model.manifest import Manifest
from clusterbak.model.names import check_relative_path
from clusterbak.storage.backupset import incomplete_reasons
from clusterbak.storage.keys import Signer
from clusterbak.storage.memory import cap_malloc_arenas
from clusterbak.storage.sink import SAMPLE_BYTES, ZSTD_LEVEL, FileSink, choose_compression
from clusterbak.storage.stages import Encryption, ObjectWriter, StoredSink, Written


@dataclass(frozen=True, slots=True)
class SetEntry:
    backup_id: str
    path: Path | str  # a local set's directory, or an S3 set's s3:// URL
    status: str  # "complete" | "incomplete" (kept, not restorable as a whole) | "partial" | "damaged"
    created_at: float  # manifest created_at, else the newest file's time
    size: int
    shards: int | None
    kind: str | None
    problem: str | None = None  # why a set is "damaged" or "incomplete"
    verified: str = "never"  # "ok" | "failed" | "never": the set's last `clusterbak verify` (its verify.json)
    verified_at: float | None = None


class StoredSet(Protocol):
    """A complete set, opened for reading. `identities` decrypt an encrypted set (empty: not given)."""

    @property
    def where(self) -> str: ...

    @property
    def identities(self) -> tuple: ...

    @property
    def local_dir(self) -> Path | None:
        """A local set's directory; None on S3."""

    def label(self, relative: str) -> str: ...

    def write_record(self, name: str, data: bytes) -> str:
        """Store verify.json / drill.json (storage/records.py) beside the manifest; returns where it went."""

    def size(self, relative: str) -> int | None:
        """The stored object's size, None when it is missing."""

    def open(self, relative: str) -> Callable[[int], bytes]:
        """A read(n) function over the stored bytes (closed when it returns b"" or on garbage collection)."""


class Repository(Protocol):
    url: str

    def check(self, writing: bool) -> None:
        """Reachable, credentials accepted, the place exists: PreconditionError (exit 3) naming the fix if not."""

    def entries(self) -> list[SetEntry]: ...

    def begin(self, backup_id: str, encryption: Encryption | None = None,
              signer: Signer | None = None) -> SetWriter: ...

    def finalize(self, writer: SetWriter, manifest: dict) -> str: ...

    def discard(self, writer: SetWriter) -> None: ...

    def manifest(self, backup_id: str, verify_key=None) -> Manifest: ...

    def open_set(self, backup_id: str, identities: tuple = ()) -> StoredSet: ...

    def delete(self, entry: SetEntry) -> None: ...

    def read_record(self, backup_id: str, name: str) -> bytes | None:
        """A record's bytes (verify.json / drill.json), None when the set has none."""

    def lock_of(self, entry: SetEntry) -> str | None:
        """Why the set cannot be deleted yet (an S3 Object Lock retention), None when it can."""


@dataclass
class SetWriter:
    """A set being written. `writer / "name"` is a SetFile (what the engines treat as a path inside the set)."""

    backup_id: str
    encryption: Encryption | None
    signer: Signer | None
    open_object: Callable[[str], ObjectWriter]
    make_folder: Callable[[str], None] = lambda relative: None
    written: dict[str, Written] = field(default_factory=dict)
    lock: dict | None = None  # S3 Object Lock arguments every object of the set is uploaded with

    def __truediv__(self, name: str) -> SetFile:
        return SetFile(self, check_relative_path(name))

    def open_sink(self, relative: str, compress: str, level: int = ZSTD_LEVEL,
                  hashes_raw: bool = False) -> _RecordingSink:
        check_relative_path(relative)
        if relative in self.written:
            raise StepFailed(f"{relative} was already written in backup {self.backup_id}")
        return _RecordingSink(self, relative, StoredSink(self.open_object(relative), compress, level, self.encryption,
                                                         hashes_raw))

    def manifest_bytes(self, manifest: dict) -> tuple[bytes, bytes | None]:
        """The manifest as stored (each file's encryption recorded) and its signature (None: unsigned)."""
        annotate(manifest, self.written)
        data = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
        return data, (self.signer.sign(data) if self.signer is not None else None)


@dataclass(frozen=True)
class SetFile:
    writer: SetWriter
    relative: str

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]

    def __truediv__(self, name: str) -> SetFile:
        return SetFile(self.writer, check_relative_path(f"{self.relative}/{name}"))

    def mkdir(self, mode: int = 0o700, exist_ok: bool = False) -> None:
        self.writer.make_folder(self.relative)

    def __str__(self) -> str:
        return f"{self.writer.backup_id}/{self.relative}"


class _RecordingSink:
    """A StoredSink whose result the writer keeps, so the manifest's file records can be checked against it."""

    def __init__(self, writer: SetWriter, relative: str, sink: StoredSink) -> None:
        self.writer, self.relative, self.sink = writer, relative, sink

    def write(self, chunk) -> None:
        self.sink.write(chunk)

    def close(self, raw_sha256: str | None = None) -> Written:
        written = self.sink.close(raw_sha256)
        self.writer.written[self.relative] = written
        return written

    def abort(self) -> None:
        self.sink.abort()


def open_stored(target: SetFile | Path, compress: str, hashes_raw: bool = False):
    """The sink a stored file is written through: a set's file (stages, any repository) or a plain local path.
    `hashes_raw`: the caller hashes the raw bytes itself and hands the digest to close(raw_sha256=...), so the sink
    does not hash an encrypted file's plaintext again (StoredSink; a plain path is never encrypted)."""
    if isinstance(target, SetFile):
        return target.writer.open_sink(target.relative, compress, hashes_raw=hashes_raw)
    return FileSink(target, compress)


def open_stored_as(target_for: Callable[[str], SetFile | Path], compress: str, hashes_raw: bool = False):
    """Like open_stored, for a file whose name depends on its compression (`target_for("zstd")` ends in .zst).
    compress "auto" holds the first SAMPLE_BYTES, then opens the file raw or zstd by how well they compress."""
    return ChoosingSink(target_for, None if compress == "auto" else compress, hashes_raw)


class ChoosingSink:
    """--compress auto (`fixed` None): the first SAMPLE_BYTES decide between raw and zstd (choose_compression);
    only then is the stored file created, under the name for that choice (`target`). Memory: one sample.
    With `fixed` the file is opened at once, as that."""

    def __init__(self, target_for: Callable[[str], SetFile | Path], fixed: str | None = None,
                 hashes_raw: bool = False) -> None:
        self.target_for, self.hashes_raw = target_for, hashes_raw
        self.target: SetFile | Path | None = None
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._sink = None
        if fixed is not None:
            self.target = target_for(fixed)
            self._sink = open_stored(self.target, fixed, hashes_raw)

    def write(self, chunk) -> None:
        if self._sink is not None:
            self._sink.write(chunk)
            return
        self._held.append(bytes(chunk))
        self._held_bytes += len(chunk)
        if self._held_bytes >= SAMPLE_BYTES:
            self._decide()

    def _decide(self) -> None:
        held, self._held = b"".join(self._held), []
        choice = choose_compression(held[:SAMPLE_BYTES])
        self.target = self.target_for(choice)
        self._sink = open_stored(self.target, choice, self.hashes_raw)
        if held:
            self._sink.write(held)

    def close(self, raw_sha256: str | None = None):
        if self._sink is None:
            self._decide()
        assert self._sink is not None  # opened by _decide
        return self._sink.close(raw_sha256) if self.hashes_raw and isinstance(self.target, SetFile) \
            else self._sink.close()

    def abort(self) -> None:
        self._held = []
        if self._sink is not None:
            self._sink.abort()


def annotate(doc: dict, written: dict[str, Written]) -> None:
    """Record each stored file's encryption (scheme, recipients' public keys) in its manifest record, and check that
    every record's sha256 is the one its sink computed."""
    seen = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            rel = node.get("path")
            if isinstance(rel, str) and "sha256" in node and rel in written:
                done = written[rel]
                if node["sha256"] != done.sha256_stored:
                    raise StepFailed(f"{rel}: the manifest record's sha256 is not the stored file's")
                if done.encryption is not None:
                    node["encryption"] = done.encryption.record()
                    if done.raw_sha256 is not None and "raw_sha256" not in node:
                        node["raw_sha256"], node["raw_size"] = done.raw_sha256, done.raw_size
                seen.add(rel)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    missing = sorted(set(written) - seen)
    if missing:
        raise StepFailed(f"stored files {missing} are not recorded in the manifest")
    if any(w.encryption is not None for w in written.values()):
        doc["encryption"] = next(w.encryption for w in written.values() if w.encryption is not None).record()


def set_status(manifest: Manifest, present) -> tuple[str, str | None]:
    """(status, problem) of a set with a valid manifest: damaged when the store lacks a file it names, incomplete
    when the manifest says it cannot be restored as a whole, else complete."""
    missing = [f.path for f in manifest.stored_files() if not present(f.path)]
    if missing:
        return "damaged", f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    reasons = incomplete_reasons(manifest)
    return ("incomplete", "; ".join(reasons)) if reasons else ("complete", None)


def open_repository(dest: str, s3=None) -> Repository:
    """`s3://bucket/prefix` -> S3Repository (options from s3: S3Options); anything else is a local directory."""
    cap_malloc_arenas()  # the stream stages' peak memory (storage/memory.py)
    if dest.startswith("s3://"):
        from clusterbak.storage.s3 import S3Repository

        return S3Repository.from_url(dest, s3)
    from clusterbak.storage.local import LocalRepository

    return LocalRepository(dest)


def require_identities(stored: StoredSet, manifest: Manifest) -> None:
    """An encrypted set's content can only be placed or fully checked with an identity."""
    encrypted = [f for f in manifest.stored_files() if f.encryption != "none"]
    if encrypted and not stored.identities:
        keys = sorted({r for f in encrypted for r in f.recipients})
        raise PreconditionError(
            f"backup {manifest.backup_id} is encrypted with age to {', '.join(keys)}: give --identity "
            "FILE (or CLUSTERBAK_IDENTITY) holding one of those keys' secret"
        )
