"""Results recorded beside a set's manifest, read by `check`: the last `verify` and the last `drill` of the set.

verify.json: {"verified_at": <unix>, "ok": <bool>, "clusterbak_version": "...", "problems": [...]}
drill.json:  {"drilled_at": <unix>, "ok": <bool>, "clusterbak_version": "...", "rto_seconds": .., "rpo_seconds": ..}
Both are written atomically (tmp + fsync + rename). A set counts as verified when verify.json says ok.
(Issue 11 may refine the verify record; this module is the one place that reads and writes them.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from clusterbak import __version__

VERIFY_FILE = "verify.json"
DRILL_FILE = "drill.json"


def _write(path: Path, doc: dict) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _read(path: Path, stamp: str) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool) or \
            not isinstance(doc.get(stamp), (int, float)):
        return None
    return doc


def record_verify(set_dir: Path, ok: bool, problems: list[str], at: float) -> Path:
    return _write(set_dir / VERIFY_FILE, {"verified_at": round(at, 3), "ok": ok, "clusterbak_version": __version__,
                                          "problems": problems[:20]})


def read_verify(set_dir: Path) -> dict | None:
    """The recorded result, or None when the set was never verified (or the record is unreadable)."""
    return _read(set_dir / VERIFY_FILE, "verified_at")


def record_drill(set_dir: Path, ok: bool, at: float, rto: float | None, rpo: float | None) -> Path:
    return _write(set_dir / DRILL_FILE, {"drilled_at": round(at, 3), "ok": ok, "clusterbak_version": __version__,
                                         "rto_seconds": rto, "rpo_seconds": rpo})


def read_drill(set_dir: Path) -> dict | None:
    return _read(set_dir / DRILL_FILE, "drilled_at")
