"""Reading a backup set's manifest (the one validated reader, for every repository) and a local set's files.

The local layout (storage/local.py): DIR/<id>.partial/ while written, DIR/<id>/ with manifest.json when complete.
A set is complete only if it has a manifest.json and no `.partial` suffix; manifest.json is written last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from clusterbak.errors import VerifyError
from clusterbak.model.manifest import Manifest, ManifestError, parse_manifest
from clusterbak.model.names import check_relative_path
from clusterbak.storage.records import read_verify

MANIFEST = "manifest.json"
PARTIAL = ".partial"
MANIFEST_LIMIT = 64 * 1024 * 1024


def read_manifest(set_dir: Path, backup_id: str) -> Manifest:
    return manifest_from_bytes(read_manifest_bytes(set_dir / MANIFEST) or b"", str(set_dir), backup_id)


def read_manifest_bytes(path: Path, missing_ok: bool = False) -> bytes | None:
    """A local manifest.json (or its .sig), no symlink followed, at most MANIFEST_LIMIT bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MANIFEST_LIMIT + 1)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise VerifyError(f"{path} cannot be read: it does not exist") from None
    except OSError as exc:
        raise VerifyError(f"{path} cannot be read: {exc.strerror} (a symlink is refused)") from exc
    if len(data) > MANIFEST_LIMIT:
        raise ManifestError(f"{path} is larger than {MANIFEST_LIMIT} bytes; not a manifest")
    return data


def manifest_from_bytes(data: bytes, where: str, backup_id: str) -> Manifest:
    """The one reading of a set's manifest.json bytes, wherever the set lives (`where` names it in messages)."""
    if len(data) > MANIFEST_LIMIT:
        raise ManifestError(f"{where}/{MANIFEST} is larger than {MANIFEST_LIMIT} bytes; not a manifest")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise VerifyError(f"{where}/{MANIFEST} cannot be read as JSON: {exc}") from exc
    return parse_manifest(doc, where, expect_id=backup_id)


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
