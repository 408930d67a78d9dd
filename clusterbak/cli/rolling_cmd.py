"""rolling-restart: replicas first, then per master CLUSTER FAILOVER -> restart -> failback."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from clusterbak.cli import common as c
from clusterbak.cli.backup_cmd import BreakLock
from clusterbak.cli.render import Outcome, Renderer
from clusterbak.cli.render_rolling import progress, show_plan, show_report, show_roles_report, stopping
from clusterbak.cli.upgrade_opts import show_versions
from clusterbak.config import load_inventory
from clusterbak.engine.rolling import (
    RollingOptions,
    StopFlag,
    apply_rewind,
    prepare,
    prepare_restore_roles,
    prepare_resume,
    run_restore_roles,
    run_rolling,
)
from clusterbak.engine.rolling_state import RunState, default_state_path, load_state
from clusterbak.engine.runs import locked_run
from clusterbak.engine.upgrade import control_host_action, prepare_upgrade, versions_now
from clusterbak.errors import EXIT_INTERRUPTED, EXIT_PRECONDITION, EXIT_STEP_FAILED, PreconditionError, UsageError
from clusterbak.model.checks import DEFAULT_MAX_LAG
from clusterbak.plan.rolling import RollingPlan
from clusterbak.plan.upgrade import is_upgrade


def register(app: typer.Typer) -> None:
    app.command("rolling-restart")(rolling_restart)


def rolling_restart(
    seed: c.Seed,
    inventory: Annotated[
        str, typer.Option("--inventory", envvar="CLUSTERBAK_INVENTORY", help="Inventory TOML with restart_command.")
    ],
    nodes: Annotated[
        str | None, typer.Option("--nodes", help="Only these nodes: ADDR,ADDR,... (default: all).")
    ] = None,
    replicas_only: Annotated[bool, typer.Option("--replicas-only", help="Restart replicas only; no failover.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before starting.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with the run recorded in the state file.")] = False,
    restore_roles: Annotated[
        bool,
        typer.Option(
            "--restore-roles",
            help="Give every master of the state file its recorded role back (CLUSTER FAILOVER), then stop.",
        ),
    ] = False,
    step_timeout: Annotated[
        float, typer.Option("--step-timeout", min=1.0, help="Seconds per step, gates included.")
    ] = 300.0,
    state: Annotated[str | None, typer.Option("--state", help="State file (default: beside the inventory).")] = None,
    max_lag: Annotated[int, typer.Option("--max-lag", help="Bytes a replica may trail its master.")] = DEFAULT_MAX_LAG,
    force_failover: Annotated[
        bool, typer.Option("--force-failover", help="CLUSTER FAILOVER FORCE: can lose writes.")
    ] = False,
    accept_new_host_keys: c.AcceptNewHostKeys = False,
    upgrade_command: Annotated[
        str | None,
        typer.Option(
            "--upgrade-command",
            help="Rolling upgrade: run this on the control host instead of each restart "
            "({host} {port} {node_id}); see docs/rolling-upgrade.md.",
        ),
    ] = None,
    user: c.User = None,
    tls: c.Tls = False,
    cacert: c.CaCert = None,
    cert: c.Cert = None,
    key: c.Key = None,
    tls_insecure: c.TlsInsecure = False,
    connect_timeout: c.ConnectTimeout = 3.0,
    quiet: c.Quiet = False,
    metrics_file: c.MetricsFile = None,
    break_lock: BreakLock = False,
    json_out: c.Json = False,
) -> None:
    """Restart every node with no lost write and every master back in its role (see docs/rolling-restart.md)."""

    def body(r: Renderer) -> Outcome:
        c.refuse_together(dry_run=dry_run, yes=yes)
        c.refuse_together(replicas_only=replicas_only, force_failover=force_failover)
        inv = load_inventory(inventory)
        opts = c.connection(seed, user, tls, cacert, cert, key, connect_timeout, inv, tls_insecure)
        path = Path(state).absolute() if state else default_state_path(inventory)
        wanted = tuple(a.strip() for a in (nodes or "").split(",") if a.strip())
        existing = load_state(path)
        if restore_roles:
            if resume or wanted or replicas_only or force_failover:
                raise UsageError("--restore-roles works alone: it gives the roles of the state file back; "
                                 "run --resume afterwards")
            return _restore_roles(r, opts, existing, path, dry_run, yes, step_timeout, seed, break_lock)
        if resume:
            existing = _resumable(existing, path, wanted, replicas_only, force_failover)
            if is_upgrade(existing.plan) != bool(upgrade_command):
                raise UsageError("--resume goes on with the plan in the state file: pass --upgrade-command (the same "
                                 "one) exactly when that run was a rolling upgrade")
            prep = prepare_resume(opts, inv, existing)
        else:
            prep = prepare(opts, inv, wanted, replicas_only, max_lag, force_failover)
            if existing is not None and not existing.finished:
                _refuse_unfinished(existing, path, prep)
        versions_before = None
        if upgrade_command:
            prep, versions_before = prepare_upgrade(prep, upgrade_command, inv, opts)
        records = [{"index": x.index, "status": x.status} for x in existing.records] if existing and resume else None
        data: dict[str, Any] = {"dry_run": dry_run, "resume": resume, "state_file": str(path),
                                "plan": prep.plan.to_dict(), "refusals": list(prep.refusals)}
        show_plan(r, data["plan"], records, prep.refusals)
        if versions_before is not None:
            data["versions"] = show_versions(r, versions_before, None)
        if prep.refusals:
            return Outcome(data=data, exit_code=EXIT_PRECONDITION, errors=list(prep.refusals))
        if dry_run:
            return Outcome(data=data)
        verb = "upgrade" if upgrade_command else "restart"
        if not yes and not r.confirm(f"{verb} {len(prep.plan.targets)} nodes of the cluster at {seed}?"):
            raise PreconditionError("not confirmed, nothing restarted (without a terminal to ask on, pass --yes)")
        run_ids = {s.node.node_id: str(s.info["run_id"]) for s in prep.inspection.states
                   if s.reachable and s.info.get("run_id") is not None}
        if resume and existing is not None:  # _resumable refused a missing state file
            existing.plan = prep.plan  # restart commands re-read from the inventory as it is now
            apply_rewind(existing, prep.rewind)
            run = existing
        else:
            run = RunState.new(prep.plan, seed, str(Path(inventory).absolute()), run_ids)
        stop = StopFlag()
        with locked_run(opts, prep.inspection.topology, "rolling-restart", break_lock) as lock, \
                stop.on_sigint(lambda: stopping(r)):
            for holder in lock.broken:
                r.note(f"broke a stale run lock: {holder.describe()}")
            action = control_host_action() if upgrade_command else None
            result = run_rolling(run, path, inv, opts, RollingOptions(step_timeout, accept_new_host_keys, action),
                                 progress(r), stop)
        data["result"] = result
        show_report(r, result)
        if versions_before is not None:
            after = versions_now(opts, versions_before)
            data["versions"] = show_versions(r, versions_before, after)
        r.verdict_line(f"rolling-restart: {result['status']}, {result['steps_done']}/{result['steps_total']} steps, "
                       f"took {result['duration_s']:.1f}s, cluster at {seed}, state in {path}")
        if result["status"] == "ok":
            return Outcome(data=data)
        code = EXIT_INTERRUPTED if result["status"] == "interrupted" else EXIT_STEP_FAILED
        return Outcome(data=data, exit_code=code, errors=[result["error"], result["advice"]])

    c.execute("rolling-restart", json_out, body, quiet, metrics_file)


def _restore_roles(r: Renderer, opts, existing: RunState | None, path: Path, dry_run: bool, yes: bool,
                   step_timeout: float, seed: str, break_lock: bool = False) -> Outcome:
    if existing is None:
        raise PreconditionError(f"no recorded roles: {path} does not exist (pass --state FILE of the run)")
    steps, refusals = prepare_restore_roles(opts, existing)
    plan = {"steps": [asdict(s) for s in steps], "targets": [s.address for s in steps], "failover_mode": "default",
            "warnings": []}
    data: dict[str, Any] = {"dry_run": dry_run, "restore_roles": True, "state_file": str(path), "plan": plan,
            "refusals": list(refusals)}
    show_plan(r, data["plan"], None, refusals)
    if refusals:
        return Outcome(data=data, exit_code=EXIT_PRECONDITION, errors=list(refusals))
    if dry_run or not steps:
        if not steps:
            r.line("every master of the state file serves its shard: nothing to do")
        return Outcome(data=data)
    if not yes and not r.confirm(f"fail {len(steps)} shards back to their recorded masters at {seed}?"):
        raise PreconditionError("not confirmed, nothing changed (without a terminal to ask on, pass --yes)")
    with locked_run(opts, [role.address for role in existing.plan.roles], "rolling-restart --restore-roles",
                    break_lock):
        result = run_restore_roles(existing, steps, opts, RollingOptions(step_timeout), progress(r))
    data["result"] = result
    show_roles_report(r, result)
    if result["status"] == "ok":
        return Outcome(data=data)
    return Outcome(data=data, exit_code=EXIT_STEP_FAILED, errors=[result["error"], result["advice"]])


def _resumable(existing: RunState | None, path: Path, wanted: tuple[str, ...], replicas_only: bool,
               force_failover: bool) -> RunState:
    if existing is None:
        raise PreconditionError(f"nothing to resume: {path} does not exist; run without --resume to start")
    if existing.finished:
        raise PreconditionError(f"the rolling restart in {path} has finished; run without --resume to start a new one")
    plan: RollingPlan = existing.plan
    if (wanted and wanted != plan.nodes) or (replicas_only and not plan.replicas_only) or \
            (force_failover and plan.failover_mode != "force"):
        raise UsageError("--resume goes on with the plan in the state file; --nodes, --replicas-only and "
                         "--force-failover must match it or be left out")
    return existing


def _refuse_unfinished(existing: RunState, path: Path, prep) -> None:
    ours = {n.node_id for n in prep.inspection.topology.nodes} == {r.node_id for r in existing.plan.roles}
    if ours:
        raise PreconditionError(f"a rolling restart is under way ({existing.done_count}/{len(existing.records)} steps "
                                f"done, {path}); add --resume to go on, or move the file aside to start over")
    raise PreconditionError(f"{path} holds an unfinished rolling restart of another cluster (other node ids); "
                            "move it aside, or pass --state FILE")
