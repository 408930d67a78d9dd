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

from clusterbak.errors import PreconditionError, StepFailed, UsageError

MANIFEST = "manifest.json"
PARTIAL = ".partial"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class SetEntry:
    backup_id: str
    path: Path
    status: str  # "complete" | "partial" | "damaged"
    created_at: float  # manifest created_at, else the directory's mtime
    size: int
    shards: int | None
    kind: str | None


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
        """Write manifest.json last (0600, fsync), then rename DIR/<id>.partial -> DIR/<id>."""
        for sub in [p for p in partial.rglob("*") if p.is_dir()] + [partial]:
            _fsync_dir(sub)
        tmp = partial / (MANIFEST + ".tmp")
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
        return final

    def discard(self, partial: Path) -> None:
        if partial.name.endswith(PARTIAL) and partial.parent == self.root:
            shutil.rmtree(partial, ignore_errors=True)

    def path(self, backup_id: str) -> Path:
        path = self.root / backup_id
        if not (path / MANIFEST).is_file():
            if (self.root / f"{backup_id}{PARTIAL}").exists():
                raise PreconditionError(f"backup {backup_id} in {self.root} is partial (never completed)")
            raise UsageError(f"no complete backup {backup_id!r} in {self.root}; `clusterbak list --dest {self.root}`")
        return path

    def manifest(self, backup_id: str) -> dict:
        path = self.path(backup_id) / MANIFEST
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StepFailed(f"{path} cannot be read as JSON: {exc}") from exc
        if doc.get("format") != FORMAT:
            raise StepFailed(f"{path}: manifest format {doc.get('format')!r} is not {FORMAT}; use a matching clusterbak")
        return doc

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
            try:
                doc = json.loads((child / MANIFEST).read_text())
                created = doc["created_at_unix"]
                out.append(SetEntry(child.name, child, "complete", created, size, len(doc["shards"]), doc.get("kind")))
            except (OSError, ValueError, KeyError):
                out.append(SetEntry(child.name, child, "damaged", child.stat().st_mtime, size, None, None))
        return sorted(out, key=lambda e: e.created_at)

    def delete(self, entry: SetEntry) -> None:
        if entry.path.parent != self.root:
            raise StepFailed(f"refusing to delete {entry.path}: not inside {self.root}")
        shutil.rmtree(entry.path)


def now() -> float:
    return time.time()
