"""What a command records beside a set when it is done (storage/records.py writes them, local or S3): verify.json
after `verify`, drill.json after `drill`; `check --dest` and prune read them."""

from __future__ import annotations

import time

from clusterbak.storage.records import RecordTarget, record_drill, record_verify


def record_verification(stored: RecordTarget, problems: list[str]) -> str:
    """verify.json: ok when no file had a problem; the first problems named."""
    return record_verify(stored, not problems, problems, time.time())


def record_drill_result(set_dir: RecordTarget, report: dict | None) -> str:
    """drill.json: the drill's verdict, RTO and RPO; None: the drill failed before it had a report."""
    if report is None:
        return record_drill(set_dir, False, time.time(), None, None)
    return record_drill(set_dir, report["ok"], time.time(), report["rto_seconds"], report["rpo_seconds"])
