"""restore-keys: selected keys (or every key) of a backup set into a live cluster or standalone server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from clusterbak.cli import common as c
from clusterbak.cli import repo_opts as ro
from clusterbak.cli.backup_cmd import Dest, DryRun
from clusterbak.cli.render import Outcome, Renderer, _size
from clusterbak.cli.render_restore_keys import show_plan, show_report
from clusterbak.config import load_inventory
from clusterbak.engine.restore_keys import prepare_restore_keys, run_restore_keys
from clusterbak.errors import EXIT_PRECONDITION, EXIT_STEP_FAILED, PreconditionError, UsageError
from clusterbak.model.manifest import Manifest
from clusterbak.plan.restore_keys import Selection, parse_slot_ranges
from clusterbak.storage.repository import StoredSet, require_identities


def register(app: typer.Typer) -> None:
    app.command("restore-keys")(restore_keys)


def read_set(dest: str, backup_id: str) -> tuple[StoredSet, Manifest]:
    """The set (local or S3: endpoint and identity from AWS_ENDPOINT_URL / CLUSTERBAK_IDENTITY) and its typed,
    validated manifest, signature checked first when CLUSTERBAK_VERIFY_KEY names a key."""
    repo = ro.repository(dest, os.environ.get("AWS_ENDPOINT_URL"), bool(os.environ.get("CLUSTERBAK_S3_PATH_STYLE")))
    manifest, stored = ro.opened(repo, backup_id, os.environ.get("CLUSTERBAK_VERIFY_KEY"),
                                 os.environ.get("CLUSTERBAK_IDENTITY"))
    require_identities(stored, manifest)
    return stored, manifest


def read_names(path: str | None) -> list[bytes]:
    if not path:
        return []
    try:
        data = Path(path).read_bytes() if path != "-" else typer.get_binary_stream("stdin").read()
    except OSError as exc:
        raise UsageError(f"--keys-from {path}: {exc.strerror}") from exc
    return [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]


def restore_keys(
    backup_id: str,
    dest: Dest,
    seed: c.Seed,
    match: Annotated[
        list[str] | None, typer.Option("--match", help="Glob of key names (Redis MATCH syntax), repeatable.")
    ] = None,
    slots: Annotated[
        list[str] | None, typer.Option("--slots", help="Slot range A-B (or one slot), repeatable.")
    ] = None,
    keys_from: Annotated[
        str | None, typer.Option("--keys-from", help="File with one key name per line ('-': stdin).")
    ] = None,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Only keys of this type, repeatable.")] = None,
    on_conflict: Annotated[
        str, typer.Option("--on-conflict", help="skip | replace | fail (checked before writing).")
    ] = "skip",
    rename_prefix: Annotated[str, typer.Option("--rename-prefix", help="Write each key as PREFIX+name.")] = "",
    ttl: Annotated[str, typer.Option("--ttl", help="keep (absolute expiry of the backup) | drop.")] = "keep",
    standalone: Annotated[bool, typer.Option("--standalone", help="The target is one non-cluster server.")] = False,
    parallel: Annotated[
        int, typer.Option("--parallel", help="Shards copied at once (each a scratch server holding its shard).")
    ] = 1,
    scratch_dir: Annotated[
        Path | None,
        typer.Option("--scratch-dir", help="Where the needed shards' dumps are placed and scratch servers keep "
                     "their files (default: the temp dir, $TMPDIR)."),
    ] = None,
    inventory: c.InventoryOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before writing.")] = False,
    dry_run: DryRun = False,
    user: c.User = None,
    tls: c.Tls = False,
    cacert: c.CaCert = None,
    cert: c.Cert = None,
    key: c.Key = None,
    tls_insecure: c.TlsInsecure = False,
    connect_timeout: c.ConnectTimeout = 3.0,
    json_out: c.Json = False,
) -> None:
    """Restore what was lost: keys by name, glob or slot range from a backup set into any live target (any shape)."""

    def body(r: Renderer) -> Outcome:
        c.check_seed(seed)  # usage errors first
        if not 1 <= parallel <= 64:
            raise UsageError(f"--parallel {parallel}: use 1 to 64")
        selection = Selection.of([m.encode() for m in match or []], read_names(keys_from),
                                 parse_slot_ranges(slots or []), type_ or [])
        if keys_from and not selection.names and not match:
            raise UsageError(f"--keys-from {keys_from} names no key")
        set_dir, manifest = read_set(dest, backup_id)
        inv = load_inventory(inventory) if inventory else None
        conn = c.connection(seed, user, tls, cacert, cert, key, connect_timeout, inv, tls_insecure)
        plan = prepare_restore_keys(manifest, selection, conn, standalone, on_conflict, ttl, rename_prefix.encode())
        data: dict[str, Any] = {"backup_id": backup_id, "dry_run": dry_run, "plan": plan.to_dict()}
        show_plan(r, data["plan"])
        if not plan.ok:
            return Outcome(data=data, exit_code=EXIT_PRECONDITION, errors=list(plan.refusals))

        def confirm() -> None:  # after the needed shards were placed and checked, before anything is written
            if not dry_run and not yes and not r.confirm(
                    f"write the selected keys of backup {backup_id} into {len(plan.masters)} target master(s)?"):
                raise PreconditionError("not confirmed; nothing was written (use --yes to skip the question)")

        report = run_restore_keys(plan, set_dir, manifest, conn, write=not dry_run, scratch_root=scratch_dir,
                                  on_event=lambda k, d: r.note(_note(k, d)), parallel=parallel,
                                  before_writing=confirm)
        data["report"] = report
        show_report(r, report)
        failed = report["totals"]["failed"]
        return Outcome(data=data, exit_code=EXIT_STEP_FAILED if failed else 0,
                       errors=[f"{failed} keys failed"] + report["errors"] if failed else [])

    c.execute("restore-keys", json_out, body)


def _note(kind: str, data: dict) -> str:
    if kind == "placing":
        return (f"placing and checking {data['shards']} shard(s) ({_size(data['bytes'])}): sha256, RDB CRC64, "
                "redis-check-rdb")
    if kind == "placed":
        return f"{data['shards']} shard(s) checked: nothing damaged"
    if kind == "loading":
        return f"shard {data['shard']}: loading into a scratch server"
    if kind == "loaded":
        return f"shard {data['shard']}: loaded in {data['seconds']}s"
    if kind == "shard":
        return f"shard {data['index']}: {data['selected']} keys selected, {data['expired']} expired since the backup"
    if kind == "checked":
        return "no selected key exists on the target (--on-conflict fail): writing"
    return kind
