"""Results recorded beside a set's manifest, read by `check`: the last `verify` and the last `drill` of the set.

verify.json: {"verified_at": <unix>, "ok": <bool>, "clusterbak_version": "...", "problems": [...]}
drill.json:  {"drilled_at": <unix>, "ok": <bool>, "clusterbak_version": "...", "rto_seconds": .., "rpo_seconds": ..}
They live in the set, local or S3: a local set's directory (written atomically: tmp + fsync + rename) or objects
under the set's prefix (one PUT: S3 replaces an object whole). A set counts as verified when verify.json says ok.
This module is the one place that builds and parses them; the repositories only store the bytes
(StoredSet.write_record, Repository.read_record).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from clusterbak import __version__

VERIFY_FILE = "verify.json"
DRILL_FILE = "drill.json"
RECORD_LIMIT = 64 * 1024  # a record is a few hundred bytes; a bigger object is not one of ours


class RecordTarget(Protocol):
    def write_record(self, name: str, data: bytes) -> str:
        """Store a record beside the set's manifest; returns where it went."""


def _dump(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def write_atomic(path: Path, data: bytes) -> Path:
    """A local record: tmp + fsync + rename, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def parse(data: bytes | None, stamp: str) -> dict | None:
    """The record, or None when it is absent, unreadable or not one of ours."""
    if data is None or len(data) > RECORD_LIMIT:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool) or \
            not isinstance(doc.get(stamp), (int, float)) or isinstance(doc.get(stamp), bool):
        return None
    return doc


def read_local(set_dir: Path, name: str) -> bytes | None:
    try:
        return (Path(set_dir) / name).read_bytes()
    except OSError:
        return None


def record_verify(target: RecordTarget, ok: bool, problems: list[str], at: float) -> str:
    return target.write_record(VERIFY_FILE, _dump({"verified_at": round(at, 3), "ok": ok,
                                                   "clusterbak_version": __version__, "problems": problems[:20]}))


def record_drill(target: RecordTarget, ok: bool, at: float, rto: float | None, rpo: float | None) -> str:
    return target.write_record(DRILL_FILE, _dump({"drilled_at": round(at, 3), "ok": ok,
                                                  "clusterbak_version": __version__, "rto_seconds": rto,
                                                  "rpo_seconds": rpo}))


def parse_verify(data: bytes | None) -> dict | None:
    """The recorded result, or None when the set was never verified (or the record is unreadable)."""
    return parse(data, "verified_at")


def parse_drill(data: bytes | None) -> dict | None:
    return parse(data, "drilled_at")


def read_verify(set_dir: Path) -> dict | None:
    """A local set's verify.json (the local listing reads it while walking the directory)."""
    return parse_verify(read_local(set_dir, VERIFY_FILE))
