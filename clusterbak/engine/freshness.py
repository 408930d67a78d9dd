"""What `check --dest` looks at: every set in the destination with its recorded verify and drill results."""

from __future__ import annotations

from clusterbak.model.freshness import SetFacts
from clusterbak.storage.records import DRILL_FILE, parse_drill
from clusterbak.storage.repository import Repository


def gather_set_facts(repo: Repository) -> list[SetFacts]:
    """The records live beside each set, in a directory or under its S3 prefix: the same facts either way."""
    out = []
    for e in repo.entries():
        complete = e.status == "complete"
        drill = parse_drill(repo.read_record(e.backup_id, DRILL_FILE)) if complete else None
        verified = complete and e.verified != "never"
        out.append(SetFacts(e.backup_id, e.status, e.created_at, e.size,
                            e.verified_at if verified else None, (e.verified == "ok") if verified else None,
                            drill["drilled_at"] if drill else None, drill["ok"] if drill else None,
                            drill.get("rto_seconds") if drill else None))
    return out
