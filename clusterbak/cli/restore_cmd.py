"""restore and drill."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from clusterbak.cli import common as c
from clusterbak.cli.backup_cmd import Dest, DryRun
from clusterbak.cli.render import Outcome, Renderer
from clusterbak.config import load_inventory
from clusterbak.engine.drill import run_drill
from clusterbak.engine.restore import run_restore, verify_or_refuse
from clusterbak.errors import EXIT_PRECONDITION, EXIT_STEP_FAILED, PreconditionError
from clusterbak.plan.restore import parse_maps, plan_restore, target_address
from clusterbak.redisops.target import probe_target
from clusterbak.storage.backupset import BackupStore


def register(app: typer.Typer) -> None:
    app.command()(restore)
    app.command()(drill)


def restore(backup_id: str, dest: Dest, inventory: Annotated[str, typer.Option("--inventory")],
            map_: Annotated[Optional[list[str]], typer.Option("--map", help="OLD_ADDR=NEW_ADDR[@CPORT], repeatable.")] = None,
            force: Annotated[bool, typer.Option("--force", help="Overwrite targets of another cluster or with data.")] = False,
            yes: Annotated[bool, typer.Option("--yes", help="Do not ask before stopping nodes.")] = False,
            prove_timeout: Annotated[float, typer.Option("--prove-timeout")] = 120.0,
            accept_new_host_keys: Annotated[bool, typer.Option("--accept-new-host-keys")] = False,
            dry_run: DryRun = False, user: c.User = None, tls: c.Tls = False, cacert: c.CaCert = None,
            cert: c.Cert = None, key: c.Key = None, tls_insecure: c.TlsInsecure = False,
            connect_timeout: c.ConnectTimeout = 3.0, json_out: c.Json = False) -> None:
    """Turn a backup set back into a running cluster (same addresses, or new ones with --map), then prove it."""

    def body(r: Renderer) -> Outcome:
        store = BackupStore(dest)
        manifest = store.manifest(backup_id)
        set_dir = store.path(backup_id)
        inv = load_inventory(inventory)
        mapping = parse_maps(map_ or [])
        verify_or_refuse(set_dir, manifest)  # before anything is touched, even for a dry run
        # connect only where the operator said: a set's addresses go through --map and the inventory first, and an
        # address the inventory does not list is never probed (the plan refuses it instead)
        wanted = [target_address(manifest, mapping, n.address).address for n in manifest.nodes]
        placed = [a for a in wanted if a in inv.addresses()]
        if not placed:
            raise PreconditionError(f"no node of backup {backup_id} maps to a node of {inv.source}; "
                                    "check --inventory and --map")
        conn = c.connection(placed[0], user, tls, cacert, cert, key, connect_timeout, inv, tls_insecure)
        targets = {address: probe_target(conn, address) for address in placed}
        plan = plan_restore(manifest, inv, mapping, targets, force)
        data = {"backup_id": backup_id, "dry_run": dry_run, "plan": plan.to_dict()}
        r.restore_plan(data["plan"])
        if not plan.ok:
            return Outcome(data=data, exit_code=EXIT_PRECONDITION, errors=list(plan.refusals))
        if dry_run:
            return Outcome(data=data)
        if not yes and not r.confirm(f"stop {len(plan.nodes)} nodes and restore backup {backup_id} into them?"):
            raise PreconditionError("not confirmed; nothing was stopped (use --yes to skip the question)")
        checks = run_restore(plan, set_dir, manifest, inv, conn, prove_timeout, accept_new_host_keys,
                             on_event=lambda k, d: r.note(f"{k} {d.get('node', '')}"), verified=True)
        r.verdict(checks)
        bad = [f"{x['subject']}: {x['check']}: {x['detail']}" for x in checks if not x["ok"]]
        data["checks"] = checks
        return Outcome(data=data, exit_code=EXIT_STEP_FAILED if bad else 0, errors=bad)

    c.execute("restore", json_out, body)


def drill(backup_id: str, dest: Dest,
          keep: Annotated[bool, typer.Option("--keep", help="Leave the drill cluster running.")] = False,
          lab_dir: Annotated[Optional[Path], typer.Option("--lab-dir", help="Where the drill cluster lives.")] = None,
          json_out: c.Json = False) -> None:
    """Rehearse a disaster: restore the set into a throwaway lab of its shape, prove it, report RTO and RPO."""

    def body(r: Renderer) -> Outcome:
        store = BackupStore(dest)
        manifest = store.manifest(backup_id)
        where = lab_dir or Path(tempfile.mkdtemp(prefix=f"clusterbak-drill-{backup_id}-"))
        report = run_drill(store.path(backup_id), manifest, where, keep, on_event=lambda k, d: r.note(f"drill: {k}"))
        r.verdict(report["checks"])
        r.drill_report(report)
        bad = [f"{x['subject']}: {x['check']}: {x['detail']}" for x in report["checks"] if not x["ok"]]
        bad += [f"reading {k} keys failed: {v.get('error')}" for k, v in report["samples"].items() if not v["ok"]]
        return Outcome(data=report, exit_code=0 if report["ok"] else EXIT_STEP_FAILED, errors=bad)

    c.execute("drill", json_out, body)
