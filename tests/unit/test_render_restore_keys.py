"""The restore-keys report as people read it: which way the keys went, per target master."""

from __future__ import annotations

import io

from clusterbak.cli.render import Renderer
from clusterbak.cli.render_restore_keys import show_report


def report(copy: dict, fallback: int) -> dict:
    master = {"address": "10.0.0.1:7000", "restored": 9, "skipped_existing": 1, "skipped_expired": 0, "failed": 0,
              "exist_on_target": 0, "bytes": 0, "batches_migrate": 2, "batches_dump": fallback,
              "batches_fallback": fallback}
    return {"mode": "write", "shards": [], "masters": [master], "errors": [], "seconds": 1.0, "keys_per_second": 10,
            "copy": copy, "totals": {"restored": 9, "skipped_existing": 1, "skipped_expired": 0, "failed": 0}}


def render(rep: dict) -> str:
    out = io.StringIO()
    show_report(Renderer(False, width=200, out=out, err=io.StringIO()), rep)
    return out.getvalue()


def test_migrate_batches_and_a_redone_one_are_shown():
    text = render(report({"migrate": True, "why_dump": None,
                          "notes": ["10.0.0.1:7000: MIGRATE of 5 keys failed (IOERR); redone by DUMP/RESTORE"]}, 1))
    assert "2 / 1 (1)" in text
    assert "copied by MIGRATE from the scratch servers" in text
    assert "note: 10.0.0.1:7000: MIGRATE of 5 keys failed (IOERR); redone by DUMP/RESTORE" in text


def test_why_no_batch_used_migrate():
    text = render(report({"migrate": False, "why_dump": "--rename-prefix (MIGRATE keeps the names)", "notes": []}, 0))
    assert "copied by DUMP/RESTORE through clusterbak: --rename-prefix (MIGRATE keeps the names)" in text
