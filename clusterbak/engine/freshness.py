"""What `check --dest` looks at: every set in the destination with its recorded verify and drill results."""

from __future__ import annotations

from pathlib import Path

from clusterbak.model.freshness import SetFacts
from clusterbak.storage.local import LocalRepository
from clusterbak.storage.records import read_drill, read_verify


def gather_set_facts(dest: str | Path) -> list[SetFacts]:
    out = []
    for e in LocalRepository(dest).entries():  # records live beside local sets only (S3: not yet)
        verify = read_verify(Path(e.path)) if e.status == "complete" else None
        drill = read_drill(Path(e.path)) if e.status == "complete" else None
        out.append(SetFacts(e.backup_id, e.status, e.created_at, e.size,
                            verify["verified_at"] if verify else None, verify["ok"] if verify else None,
                            drill["drilled_at"] if drill else None, drill["ok"] if drill else None,
                            drill.get("rto_seconds") if drill else None))
    return out
