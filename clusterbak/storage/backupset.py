"""Backup sets on a local directory: DIR/<id>.partial/ while written, DIR/<id>/ with manifest.json when complete.

A set is complete only if it has a manifest.json and no `.partial` suffix; manifest.json is written last.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from clusterbak.errors import PreconditionError, StepFailed, UsageError, VerifyError
from clusterbak.model.manifest import BACKUP_ID, FORMAT, Manifest, ManifestError, parse_manifest
from clusterbak.model.names import check_relative_path
from clusterbak.storage.records import read_verify

MANIFEST = "manifest.json"
PARTIAL = ".partial"
MANIFEST_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SetEntry:
    backup_id: str
    path: Path
    status: str  # "complete" | "incomplete" (kept, not restorable as a whole) | "partial" | "damaged"
    created_at: float  # manifest created_at, else the directory's mtime
    size: int
    shards: int | None
    kind: str | None
    problem: str | None = None  # why a set is "damaged" or "incomplete"
    verified: str = "never"  # "ok" | "failed" | "never": the last `clusterbak verify` of this set (verify.json)
    verified_at: float | None = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BackupStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    def begin(self, backup_id: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if (self.root / backup_id).exists():
            raise PreconditionError(f"{self.root / backup_id} already exists; backup ids never overwrite")
        partial = self.root / f"{backup_id}{PARTIAL}"
        partial.mkdir(mode=0o700)
        return partial

    def finalize(self, partial: Path, manifest: dict) -> Path:
        """Write manifest.json last (0600, fsync), then rename DIR/<id>.partial -> DIR/<id>.
        A full or failing destination is a failed step naming the file (exit 4), never an unexpected error."""
        tmp = partial / (MANIFEST + ".tmp")
        try:
            for sub in [p for p in partial.rglob("*") if p.is_dir()] + [partial]:
                _fsync_dir(sub)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(manifest, fh, indent=2, sort_keys=False)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, partial / MANIFEST)
            _fsync_dir(partial)
            final = self.root / partial.name[: -len(PARTIAL)]
            os.rename(partial, final)
            _fsync_dir(self.root)
        except OSError as exc:
            raise StepFailed(f"{exc.filename or partial / MANIFEST}: cannot write the manifest: {exc.strerror}; "
                             "no set was completed (free space on the destination and run the backup again)") from exc
        return final

    def discard(self, partial: Path) -> None:
        if partial.name.endswith(PARTIAL) and partial.parent == self.root:
            shutil.rmtree(partial, ignore_errors=True)

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

    def manifest(self, backup_id: str) -> Manifest:
        """The set's manifest, read once and validated (exit 4 naming the field when it is damaged or crafted)."""
        return read_manifest(self.path(backup_id), backup_id)

    def entries(self) -> list[SetEntry]:
        if not self.root.is_dir():
            return []
        out = []
        for child in sorted(self.root.iterdir()):
            if not child.is_dir():
                continue
            size = sum(p.stat().st_size for p in child.rglob("*") if p.is_file())
            if child.name.endswith(PARTIAL):
                out.append(SetEntry(child.name[: -len(PARTIAL)], child, "partial", child.stat().st_mtime, size, None, None))
                continue
            verified, verified_at = read_verification(child)
            try:
                if not (child / MANIFEST).exists():
                    raise FileNotFoundError
                m = read_manifest(child, child.name)
                missing = [f.path for f in m.stored_files() if not (child / f.path).is_file()]
                reasons = incomplete_reasons(m)
                status = "damaged" if missing else "incomplete" if reasons else "complete"
                problem = (f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                           if missing else "; ".join(reasons) or None)
                out.append(SetEntry(child.name, child, status, m.created_at_unix, size, len(m.shards), m.kind,
                                    problem, verified, verified_at))
            except FileNotFoundError:
                out.append(SetEntry(child.name, child, "damaged", child.stat().st_mtime, size, None, None,
                                    f"{MANIFEST} missing", verified, verified_at))
            except (StepFailed, UsageError) as exc:
                out.append(SetEntry(child.name, child, "damaged", child.stat().st_mtime, size, None, None,
                                    str(exc).replace(str(child) + "/", ""), verified, verified_at))
        return sorted(out, key=lambda e: e.created_at)

    def delete(self, entry: SetEntry) -> None:
        if entry.path.parent != self.root:
            raise StepFailed(f"refusing to delete {entry.path}: not inside {self.root}")
        shutil.rmtree(entry.path)


def read_manifest(set_dir: Path, backup_id: str) -> Manifest:
    path = set_dir / MANIFEST
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MANIFEST_LIMIT + 1)
        if len(data) > MANIFEST_LIMIT:
            raise ManifestError(f"{path} is larger than {MANIFEST_LIMIT} bytes; not a manifest")
        doc = json.loads(data)
    except OSError as exc:
        raise VerifyError(f"{path} cannot be read: {exc.strerror} (a symlink is refused)") from exc
    except ValueError as exc:
        raise VerifyError(f"{path} cannot be read as JSON: {exc}") from exc
    return parse_manifest(doc, str(set_dir), expect_id=backup_id)


def incomplete_reasons(m: Manifest) -> list[str]:
    """Why a set cannot be restored as a whole (the manifest's `incomplete` list); [] for a restorable set."""
    reasons = m.raw.get("incomplete") or []
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise VerifyError(f"{m.backup_id}/manifest.json: incomplete must be a list of strings")
    return reasons


def set_file(set_dir: Path, relative: str) -> Path:
    """A stored file's path: a checked relative name, and no symlink anywhere below the set directory (a link could
    point a restore at any file of the control host)."""
    check_relative_path(relative)
    path = set_dir
    for part in relative.split("/"):
        path = path / part
        if path.is_symlink():
            raise VerifyError(f"{path} is a symbolic link; a backup set holds only regular files")
    return path


def read_verification(path: Path) -> tuple[str, float | None]:
    """("ok" | "failed" | "never", when) from the set's verify.json (storage/records.py reads it)."""
    record = read_verify(path)
    if record is None:
        return "never", None
    return ("ok" if record["ok"] else "failed"), float(record["verified_at"])
