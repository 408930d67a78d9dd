"""restore and drill."""

from __future__ import annotations

import os
import shlex
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from clusterbak.cli import common as c
from clusterbak.cli import repo_opts as ro
from clusterbak.cli.backup_cmd import BreakLock, Dest, DryRun, resolve_id
from clusterbak.cli.render import NodeProgress, Outcome, Renderer
from clusterbak.config import load_inventory
from clusterbak.engine.drill import restore_sizes, run_drill
from clusterbak.engine.records import record_drill_result
from clusterbak.engine.restore import rollback_restore, run_restore
from clusterbak.engine.restore_journal import journal_path, load_journal
from clusterbak.engine.restore_prepare import prepare_restore
from clusterbak.engine.runs import locked_run
from clusterbak.errors import EXIT_PRECONDITION, EXIT_STEP_FAILED, ClusterbakError, PreconditionError, UsageError
from clusterbak.lab.scratch_cluster import lab_scratch_cluster
from clusterbak.plan.restore import parse_maps
from clusterbak.storage.repository import Repository

PROVE_PASSWORD_ENV = "CLUSTERBAK_PROVE_PASSWORD"


def register(app: typer.Typer) -> None:
    app.command()(restore)
    app.command()(drill)


def restore(
    backup_id: Annotated[str, typer.Argument(help="The set's id (see `clusterbak list`).")],
    dest: Dest,
    inventory: c.InventoryFile,
    map_: Annotated[list[str] | None, typer.Option("--map", help="OLD_ADDR=NEW_ADDR[@CPORT], repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite targets of another cluster or with data.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before stopping nodes.")] = False,
    with_config: Annotated[
        bool,
        typer.Option(
            "--with-config",
            help="Also place each node's config file (and its ACL file if it names one); "
            "the plan shows the directives that change, secrets masked.",
        ),
    ] = False,
    with_acl: Annotated[
        bool, typer.Option("--with-acl", help="Also place each node's users into the target's aclfile.")
    ] = False,
    prove_timeout: Annotated[
        float, typer.Option("--prove-timeout", help="Seconds to wait for the restored cluster to prove itself.")
    ] = 120.0,
    accept_new_host_keys: c.AcceptNewHostKeys = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Go on with a restore that was cut short (its journal beside the inventory)."),
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Undo a restore that was cut short: previous files back, nodes started.")
    ] = False,
    dry_run: DryRun = False,
    user: c.User = None,
    tls: c.Tls = False,
    cacert: c.CaCert = None,
    cert: c.Cert = None,
    key: c.Key = None,
    tls_insecure: c.TlsInsecure = False,
    connect_timeout: c.ConnectTimeout = 3.0,
    break_lock: BreakLock = False,
    quiet: c.Quiet = False,
    s3_endpoint_url: ro.Endpoint = None,
    s3_path_style: ro.PathStyle = False,
    identity: ro.Identity = None,
    verify_key: ro.VerifyKey = None,
    json_out: c.Json = False,
) -> None:
    """Turn a backup set back into a running cluster (same addresses, or new ones with --map), then prove it."""

    def body(r: Renderer) -> Outcome:
        c.refuse_together(dry_run=dry_run, yes=yes)
        c.check_tls_flags(tls, cacert, cert, key, tls_insecure)
        store = ro.repository(dest, s3_endpoint_url, s3_path_style)
        inv = load_inventory(inventory)
        journal = journal_path(inventory)
        existing = load_journal(journal)
        base = f"clusterbak restore {shlex.quote(backup_id)} --dest {shlex.quote(str(dest))} --inventory " \
               f"{shlex.quote(str(inventory))}"
        keys = "".join(f" {flag} {shlex.quote(value)}" for flag, value in (("--identity", identity),
                                                                          ("--verify-key", verify_key)) if value)
        commands = {"resume": f"{base}{keys} --resume", "rollback": f"{base} --rollback"}
        if resume or rollback:
            return _cut_short(r, store, inv, journal, existing, backup_id, resume, bool(map_ or force), dry_run, yes,
                              commands, lambda seed: c.connection(seed, user, tls, cacert, cert, key, connect_timeout,
                                                                 inv, tls_insecure), prove_timeout,
                              accept_new_host_keys, break_lock, (verify_key, identity))
        if existing is not None:
            raise PreconditionError(f"a restore of {existing.backup_id} was cut short ({existing.summary()}); "
                                    f"continue it: {commands['resume'].replace(backup_id, existing.backup_id, 1)}; "
                                    f"or undo it: {commands['rollback'].replace(backup_id, existing.backup_id, 1)}")
        manifest, set_dir = ro.opened(store, backup_id, verify_key, identity)  # signature first, then the reader
        prepared = prepare_restore(set_dir, manifest, inv, parse_maps(map_ or []),
                                   lambda seed: c.connection(seed, user, tls, cacert, cert, key, connect_timeout, inv,
                                                             tls_insecure),
                                   force=force, with_config=with_config, with_acl=with_acl,
                                   accept_new_host_keys=accept_new_host_keys)
        plan, conn = prepared.plan, prepared.conn
        data: dict[str, Any] = {"backup_id": backup_id, "dry_run": dry_run, "plan": plan.to_dict()}
        r.restore_plan(data["plan"])
        if not plan.ok:
            return Outcome(data=data, exit_code=EXIT_PRECONDITION, errors=list(plan.refusals))
        if dry_run:
            return Outcome(data=data)
        if not yes and not r.confirm(f"stop {len(plan.nodes)} nodes and restore backup {backup_id} into them?"):
            raise PreconditionError("not confirmed; nothing was stopped (use --yes to skip the question)")
        t0 = time.monotonic()
        steps_done: list[str] = []  # the steps the run reports as it begins each: --dry-run printed plan.steps

        def on_event(kind: str, detail: dict) -> None:
            if kind == "interrupt":
                _interrupt_note(r)
            elif kind == "step":
                steps_done.append(detail["text"])
            else:
                progress(kind, detail)

        with _run_lock(r, conn, [n.new_address for n in plan.nodes], break_lock), \
                NodeProgress(r, restore_sizes(plan, manifest)) as progress:
            checks = run_restore(plan, set_dir, manifest, inv, conn, prove_timeout, accept_new_host_keys,
                                 on_event=on_event, verified=True, journal_file=journal, commands=commands)
        r.verdict(checks)
        bad = [f"{x['subject']}: {x['check']}: {x['detail']}" for x in checks if not x["ok"]]
        data["checks"] = checks
        data["steps_done"] = steps_done
        r.verdict_line(f"restore {backup_id}: {'ok' if not bad else 'FAILED'}, {len(plan.nodes)} nodes, "
                       f"took {time.monotonic() - t0:.1f}s, cluster at {', '.join(sorted(progress.sizes))}")
        return Outcome(data=data, exit_code=EXIT_STEP_FAILED if bad else 0, errors=bad)

    c.execute("restore", json_out, body, quiet)


@contextmanager
def _run_lock(r: Renderer, conn, addresses: list[str], break_lock: bool):
    """The cluster's run lock on the targets that answer (a cluster that is all down has nowhere to hold it)."""
    with locked_run(conn, addresses, "restore", break_lock, none_up_ok=True) as lock:
        for holder in lock.broken:
            r.note(f"broke a stale run lock: {holder.describe()}")
        yield lock


def _interrupt_note(r: Renderer) -> None:
    r.note("interrupted: finishing the placements under way, then every node gets its previous files back and is "
           "started (interrupt again to stop at once and keep the journal for --resume / --rollback)")


def _cut_short(r: Renderer, store: Repository, inv, journal: Path, existing, backup_id: str, resume: bool,
               replanning: bool, dry_run: bool, yes: bool, commands: dict[str, str], connect, prove_timeout: float,
               accept_new_host_keys: bool, break_lock: bool = False,
               keys: tuple[str | None, str | None] = (None, None)) -> Outcome:
    """restore ID --resume | --rollback: follow the plan in the restore journal."""
    if replanning:
        raise UsageError("--resume and --rollback work alone: they follow the plan in the restore journal")
    if existing is None:
        raise PreconditionError(f"nothing to {'resume' if resume else 'roll back'}: {journal} does not exist")
    if existing.backup_id != backup_id:
        raise PreconditionError(f"{journal} is a restore of {existing.backup_id}, not of {backup_id}")
    plan = existing.restore_plan()
    # --resume reads the set again: its signature checked and its identity loaded first, before any node is touched
    stored = ro.opened(store, backup_id, *keys) if resume else None
    conn = connect(plan.nodes[0].new_address)
    verb = "resume" if resume else "roll back"
    r.line(f"restore of {backup_id} cut short ({existing.phase}): {existing.summary()}")
    if dry_run:
        r.line("--resume places the set on the nodes not done yet, starts every node and proves the cluster"
               if resume else "--rollback stops any node started with the restored files, puts every node's "
               "previous files back and starts the nodes clusterbak stopped")
        return Outcome(data={"backup_id": backup_id, "dry_run": True, "action": verb, "journal": existing.to_dict()})
    if not yes and not r.confirm(f"{verb} the restore of {backup_id} on {len(plan.nodes)} nodes?"):
        raise PreconditionError("not confirmed; nothing changed (use --yes to skip the question)")
    with _run_lock(r, conn, [n.new_address for n in plan.nodes], break_lock):
        return _follow_journal(r, stored, inv, journal, existing, backup_id, resume, commands, conn, prove_timeout,
                               accept_new_host_keys, plan)


def _follow_journal(r: Renderer, stored, inv, journal: Path, existing, backup_id: str, resume: bool,
                    commands: dict[str, str], conn, prove_timeout: float, accept_new_host_keys: bool,
                    plan) -> Outcome:
    note = lambda k, d: r.note(f"{k} {d.get('node', '')}")  # noqa: E731
    if not resume:
        before = rollback_restore(journal, existing, inv, conn, accept_new_host_keys, on_event=note)
        r.line(f"restore of {backup_id} rolled back: every node has its previous files and runs (it was: {before})")
        return Outcome(data={"backup_id": backup_id, "rolled_back": True, "was": before})
    manifest, set_dir = stored  # (manifest, stored set), read with the signature and identity checks (ro.opened)
    checks = run_restore(plan, set_dir, manifest, inv, conn, prove_timeout,
                         accept_new_host_keys, on_event=note, journal_file=journal, resume=existing, commands=commands)
    r.verdict(checks)
    bad = [f"{x['subject']}: {x['check']}: {x['detail']}" for x in checks if not x["ok"]]
    return Outcome(data={"backup_id": backup_id, "resumed": True, "checks": checks},
                   exit_code=EXIT_STEP_FAILED if bad else 0, errors=bad)


def drill(
    backup_id: Annotated[str, typer.Argument(help="A set's id, or `latest`.")],
    dest: Dest,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the drill cluster running (and its files); the report says how to remove it."
        ),
    ] = False,
    lab_dir: Annotated[
        Path | None,
        typer.Option("--lab-dir", help="New or empty directory for the drill cluster (default: a temp dir)."),
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option("--base-port", min=1, max=55535, help="First port of the drill cluster (default: free ports)."),
    ] = None,
    prove_user: Annotated[
        str | None,
        typer.Option(
            "--prove-user",
            help="An ACL user of the set that must authenticate on the drill cluster; "
            f"its password comes from ${PROVE_PASSWORD_ENV}.",
        ),
    ] = None,
    quiet: c.Quiet = False,
    metrics_file: c.MetricsFile = None,
    s3_endpoint_url: ro.Endpoint = None,
    s3_path_style: ro.PathStyle = False,
    identity: ro.Identity = None,
    verify_key: ro.VerifyKey = None,
    json_out: c.Json = False,
) -> None:
    """Rehearse a disaster: restore the set into a throwaway lab of its shape, prove it, report RTO and RPO.
    Nothing is left behind (processes, data) unless --keep; the result is recorded beside the set (drill.json)."""

    def body(r: Renderer) -> Outcome:
        repo = ro.repository(dest, s3_endpoint_url, s3_path_style)
        bid = resolve_id(repo, backup_id)
        manifest, set_dir = ro.opened(repo, bid, verify_key, identity)
        password = os.environ.get(PROVE_PASSWORD_ENV) or None
        if prove_user and not password:
            raise UsageError(f"--prove-user {prove_user}: set its password in ${PROVE_PASSWORD_ENV}")
        try:
            with NodeProgress(r, {}) as progress:
                report = run_drill(set_dir, manifest, lab_dir, keep, lab_scratch_cluster, on_event=progress,
                                   base_port=base_port,
                                   prove_user=prove_user, prove_password=password)
        except ClusterbakError:
            record_drill_result(set_dir, None)  # beside the set, local or S3: check --dest reads it
            raise
        record_drill_result(set_dir, report)
        r.verdict(report["checks"])
        r.drill_report(report)
        bad = [f"{x['subject']}: {x['check']}: {x['detail']}" for x in report["checks"] if not x["ok"]]
        bad += [f"reading {k} keys failed: {v.get('error')}" for k, v in report["samples"].items() if not v["ok"]]
        lab = report["lab"]
        where = f"lab kept at {lab['seed']} (clusterbak lab down --dir {lab['dir']})" if lab["kept"] else \
            ("lab removed" if lab["removed"] else f"lab NOT fully removed: {lab['dir']}")
        r.verdict_line(f"drill {bid}: {'PASSED' if report['ok'] else 'FAILED'}, RTO {report['rto_seconds']:.1f}s, "
                       f"RPO {report['rpo_seconds']:.0f}s, {report['keys']} keys, {where}")
        return Outcome(data=report, exit_code=0 if report["ok"] else EXIT_STEP_FAILED, errors=bad)

    c.execute("drill", json_out, body, quiet, metrics_file)
