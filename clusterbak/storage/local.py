"""Backup sets in a local directory: DIR/<id>.partial/ while written, DIR/<id>/ once manifest.json (written last,
fsynced) is in and the directory renamed. Files are 0600 and created with O_EXCL: a set never overwrites."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from clusterbak.errors import PreconditionError, StepFailed, UsageError
from clusterbak.model.manifest import BACKUP_ID, Manifest
from clusterbak.model.names import check_relative_path
from clusterbak.storage.backupset import (
    MANIFEST,
    PARTIAL,
    manifest_from_bytes,
    read_manifest_bytes,
    read_verification,
    set_file,
)
from clusterbak.storage.direct import DirectWriter
from clusterbak.storage.keys import SIGNATURE_SUFFIX, Signer, check_signature
from clusterbak.storage.records import read_local, write_atomic
from clusterbak.storage.repository import SetEntry, SetWriter, set_status
from clusterbak.storage.sink import _fsync_dir
from clusterbak.storage.stages import Encryption


class LocalFile:
    """ObjectWriter for a local file: O_EXCL|O_NOFOLLOW, 0600, fsync of the file on close. Its directory is fsynced
    once for all its files by LocalRepository.finalize, before manifest.json: one fsync per file plus one per
    directory, not one per file for its directory too (a set of many small files paid twice per file)."""

    def __init__(self, path: Path) -> None:
        self.path, self.label = path, str(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StepFailed(f"{path}: cannot create: {exc.strerror}") from exc
        self._file = DirectWriter(fd)  # a large file skips the page cache (storage/direct.py)
        self._closed = self._released = False

    def write(self, data) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise StepFailed(f"{self.path}: write failed: {exc.strerror}") from exc

    def close(self) -> None:
        try:
            self._file.finish()
        except OSError as exc:
            raise StepFailed(f"{self.path}: cannot finish the file: {exc.strerror}") from exc
        finally:
            self._release()
        self._closed = True

    def abort(self) -> None:
        if self._closed:
            return
        self._release()
        self.path.unlink(missing_ok=True)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            try:
                self._file.close()
            except OSError:
                pass


class LocalStoredSet:
    def __init__(self, root: Path, identities: tuple = ()) -> None:
        self.root, self.where, self.identities = root, str(root), identities
        self.local_dir = root

    def write_record(self, name: str, data: bytes) -> str:
        return str(write_atomic(self.root / check_relative_path(name), data))

    def label(self, relative: str) -> str:
        return str(self.root / relative)

    def size(self, relative: str) -> int | None:
        path = set_file(self.root, relative)
        return path.stat().st_size if path.is_file() else None

    def open(self, relative: str) -> Callable[[int], bytes]:
        path = set_file(self.root, relative)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise StepFailed(f"{path}: cannot read: {exc.strerror}") from exc
        fh = os.fdopen(fd, "rb")

        def read(n: int) -> bytes:
            if fh.closed:
                return b""
            try:
                data = fh.read(n)
            except OSError as exc:
                fh.close()
                raise StepFailed(f"{path}: cannot read: {exc.strerror}") from exc
            if not data:
                fh.close()
            return data

        return read


class LocalRepository:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def check(self, writing: bool) -> None:
        if writing and self.root.exists() and not os.access(self.root, os.W_OK | os.X_OK):
            raise PreconditionError(f"{self.root} is not writable by this user")

    def begin(self, backup_id: str, encryption: Encryption | None = None, signer: Signer | None = None) -> SetWriter:
        if (self.root / backup_id).exists() or (self.root / f"{backup_id}{PARTIAL}").exists():
            raise PreconditionError(f"{self.root / backup_id} already exists; backup ids never overwrite")
        partial = self.root / f"{backup_id}{PARTIAL}"
        made = threading.Lock()

        def ensure() -> Path:  # DIR/<id>.partial appears with the first file: a run stopped before that leaves nothing
            with made:
                if not partial.is_dir():
                    self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                    partial.mkdir(mode=0o700)
            return partial

        def make_folder(relative: str) -> None:
            (ensure() / relative).mkdir(mode=0o700, exist_ok=True)

        return SetWriter(backup_id, encryption, signer, lambda rel: LocalFile(ensure() / rel), make_folder)

    def _partial(self, writer: SetWriter) -> Path:
        return self.root / f"{writer.backup_id}{PARTIAL}"

    def finalize(self, writer: SetWriter, manifest: dict) -> str:
        """manifest.json.sig (when signing), then manifest.json last (0600, fsync),
        then DIR/<id>.partial -> DIR/<id>."""
        partial = self._partial(writer)
        data, signature = writer.manifest_bytes(manifest)
        final = self.root / writer.backup_id
        try:  # a full or failing destination is a failed step naming the file (exit 4), never an unexpected error
            for sub in [p for p in partial.rglob("*") if p.is_dir()] + [partial]:
                _fsync_dir(sub)
            if signature is not None:
                _write_new(partial / (MANIFEST + SIGNATURE_SUFFIX), signature)
            _write_new(partial / (MANIFEST + ".tmp"), data)
            os.replace(partial / (MANIFEST + ".tmp"), partial / MANIFEST)
            _fsync_dir(partial)
            os.rename(partial, final)
            _fsync_dir(self.root)
        except OSError as exc:
            raise StepFailed(f"{exc.filename or partial / MANIFEST}: cannot write the manifest: {exc.strerror}; "
                             "no set was completed (free space on the destination and run the backup again)") from exc
        return str(final)

    def discard(self, writer: SetWriter) -> None:
        shutil.rmtree(self._partial(writer), ignore_errors=True)

    def path(self, backup_id: str) -> Path:
        if not BACKUP_ID.fullmatch(backup_id):
            raise UsageError(f"{backup_id!r} is not a backup id (see `clusterbak list --dest {self.root}`)")
        path = self.root / backup_id
        if not (path / MANIFEST).is_file():
            if (self.root / f"{backup_id}{PARTIAL}").exists():
                raise PreconditionError(f"backup {backup_id} in {self.root} is partial (never completed)")
            if path.is_dir():
                raise StepFailed(f"{path / MANIFEST}: missing: the set is damaged and cannot be verified or restored; "
                                 "use another set")
            raise UsageError(f"no complete backup {backup_id!r} in {self.root}; `clusterbak list --dest {self.root}`")
        return path

    def manifest(self, backup_id: str, verify_key=None) -> Manifest:
        """The set's manifest, its signature checked first when a key is given, then read once and validated."""
        path = self.path(backup_id)
        data = read_manifest_bytes(path / MANIFEST)
        assert data is not None  # not missing_ok: a missing manifest raises
        if verify_key is not None:
            signature = read_manifest_bytes(path / (MANIFEST + SIGNATURE_SUFFIX), True)
            check_signature(verify_key, data, signature, str(path))
        return manifest_from_bytes(data, str(path), backup_id)

    def open_set(self, backup_id: str, identities: tuple = ()) -> LocalStoredSet:
        return LocalStoredSet(self.path(backup_id), identities)

    def entries(self) -> list[SetEntry]:
        if not self.root.is_dir():
            return []
        out = []
        for child in sorted(self.root.iterdir()):
            if not child.is_dir():
                continue
            size = sum(p.stat().st_size for p in child.rglob("*") if p.is_file())
            if child.name.endswith(PARTIAL):
                out.append(SetEntry(child.name[: -len(PARTIAL)], child, "partial", child.stat().st_mtime, size,
                                    None, None))
                continue
            verified, verified_at = read_verification(child)
            try:
                if not (child / MANIFEST).exists():
                    raise FileNotFoundError
                m = manifest_from_bytes(read_manifest_bytes(child / MANIFEST) or b"", str(child), child.name)
                status, problem = set_status(m, lambda rel, child=child: (child / rel).is_file())
                out.append(SetEntry(child.name, child, status, m.created_at_unix, size, len(m.shards), m.kind,
                                    problem, verified, verified_at))
            except FileNotFoundError:
                out.append(SetEntry(child.name, child, "damaged", child.stat().st_mtime, size, None, None,
                                    f"{MANIFEST} missing", verified, verified_at))
            except (StepFailed, UsageError) as exc:
                out.append(SetEntry(child.name, child, "damaged", child.stat().st_mtime, size, None, None,
                                    str(exc).replace(str(child) + "/", ""), verified, verified_at))
        return sorted(out, key=lambda e: e.created_at)

    def read_record(self, backup_id: str, name: str) -> bytes | None:
        if not BACKUP_ID.fullmatch(backup_id):
            return None
        return read_local(self.root / backup_id, check_relative_path(name))

    def lock_of(self, entry: SetEntry) -> str | None:
        return None  # a directory has no retention lock

    def delete(self, entry: SetEntry) -> None:
        path = Path(entry.path)
        if path.parent != self.root:
            raise StepFailed(f"refusing to delete {path}: not inside {self.root}")
        shutil.rmtree(path)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
