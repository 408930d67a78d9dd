"""Views of `restore-keys`: the plan, then per shard and per target master counts. Printing only via a Renderer."""

from __future__ import annotations

from clusterbak.cli.render import Renderer, _escape, _size


def show_plan(r: Renderer, plan: dict) -> None:
    if r.json_mode:
        return
    r.table(f"restore-keys from backup {plan['backup_id']} ({plan['kind']}): {plan['selection']}",
            ("shard", "slots", "backed up from", "keys in backup"),
            [(s["index"], " ".join(s["slots"]), s["source"], s["keys_in_backup"]) for s in plan["shards"]])
    target = plan["target"]
    r.table("target " + ("(standalone)" if target["standalone"] else "masters"), ("master", "slots", "server", "keys"),
            [(m["address"], " ".join(m["slots"]), m["server"], m["keys"]) for m in target["masters"]])
    r.line(f"on conflict: {plan['on_conflict']}, TTL: {plan['ttl']}"
           + (f", written as {plan['rename_prefix']}<name>" if plan["rename_prefix"] else "")
           + f"; read by {plan['scratch_server']} (DUMP payloads RDB {plan['payload_rdb_version']})")
    r.line(f"places {plan['place_bytes']} bytes ({_size(plan['place_bytes'])}) of dumps under the scratch dir "
           "(every needed shard at once, checked before any key is written)")
    for line in plan["refusals"]:
        r.line(f"[bold red]refused:[/] {_escape(line)}")


def show_report(r: Renderer, rep: dict) -> None:
    if r.json_mode:
        return
    dry = rep["mode"] == "dry-run"
    r.table(
        "per shard" + (" (dry run: nothing written)" if dry else ""),
        ("shard", "source", "selected", "expired since backup", "not in backup", "exist on target", "bytes", "load"),
        [
            (
                s["index"],
                s["source"],
                s["selected"],
                s["expired"],
                s["missing"],
                s["exist_on_target"] if dry else "-",
                _size(s["bytes"]),
                f"{s['load_seconds']}s",
            )
            for s in rep["shards"]
        ],
    )
    if not dry:
        r.table("per target master", ("master", "restored", "skipped existing", "skipped expired", "failed",
                                      "batches MIGRATE / DUMP (redone)"),
                [(m["address"], m["restored"], m["skipped_existing"], m["skipped_expired"], m["failed"],
                  f"{m['batches_migrate']} / {m['batches_dump']} ({m['batches_fallback']})") for m in rep["masters"]],
                [("bold red" if m["failed"] else None) for m in rep["masters"]])
        copy = rep["copy"]
        r.line("copied by MIGRATE from the scratch servers" if copy["migrate"]
               else f"copied by DUMP/RESTORE through clusterbak: {_escape(copy['why_dump'])}")
        for line in copy["notes"]:
            r.line(f"[yellow]note:[/] {_escape(line)}")
    t = rep["totals"]
    if dry:
        r.line(f"would write {t['selected']} keys ({_size(t['bytes'])}); {t['exist_on_target']} exist on the target; "
               f"{t['skipped_expired']} expired since the backup")
    else:
        r.line(f"restored {t['restored']}, skipped existing {t['skipped_existing']}, skipped expired "
               f"{t['skipped_expired']}, failed {t['failed']} in {rep['seconds']}s ({rep['keys_per_second']} keys/s)")
    for line in rep["errors"]:
        r.line(f"[bold red]error:[/] {_escape(line)}")
