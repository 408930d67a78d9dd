"""Execute a RollingPlan one step at a time, gate after every step, keep a resumable state file.

Safety interlocks checked against the live cluster before every action, whatever the plan says:
a node is restarted only while it is a replica of the expected master (never a master serving slots), and
CLUSTER FAILOVER is sent only to an in-sync replica of the expected master. So a run that stops anywhere
(a failed step, a gate timeout, Ctrl-C) leaves every shard with a master.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbak.engine.inspect import Inspection, inspect
from clusterbak.engine.interrupts import StopFlag  # noqa: F401 - the CLI takes it from here
from clusterbak.engine.rolling_live import ShardServing, read_serving, serving_data
from clusterbak.engine.rolling_state import DONE, FAILED, RUNNING, RunState, StepRecord, save_state
from clusterbak.errors import ClusterbakError, Interrupted, StepFailed
from clusterbak.model.address import Address
from clusterbak.model.checks import CRITICAL
from clusterbak.model.inventory import Inventory
from clusterbak.plan.rolling import (
    FAILBACK,
    FAILOVER,
    RESTART,
    RollingPlan,
    Step,
    plan_restore_roles,
    plan_rolling,
    reconcile,
    refresh_commands,
    slot_map_for,
)
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.failover import (
    Clients,
    ClusterFault,
    GateTimeout,
    UnclearFailover,
    Watchdog,
    cluster_reason,
    confirm_switch,
    failover_and_confirm,
    links_reason,
    node_up_reason,
    replica_reason,
    switched_reason,
    wait_gate,
)
from clusterbak.transports.factory import open_transport

Event = Callable[[str, dict], None]
PLAN_CHECKED = {"no_replica", "no_synced_replica"}  # the planner judges these, only for masters it restarts
RESUMABLE_ON_NODE = {"unreachable", "node_failing", "cluster_state"}  # the interrupted restart's own node
UNANSWERED_PATIENCE = 30.0  # a failover's replica that does not answer is waited for this long before refusing


@dataclass(frozen=True, slots=True)
class RollingOptions:
    step_timeout: float = 300.0
    accept_new_host_keys: bool = False
    # the restart step's action: None runs step.command through the node's transport; a rolling upgrade passes
    # its own (clusterbak.engine.upgrade), called as node_action(step, seconds_left)
    node_action: Callable[[Step, float], None] | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    inspection: Inspection
    plan: RollingPlan
    refusals: tuple[str, ...]
    rewind: tuple[int, ...] = ()  # --resume: steps to do again because the live roles went back (reconcile)


def prepare(conn: ConnectionOptions, inventory: Inventory, nodes: tuple[str, ...], replicas_only: bool,
            max_lag: int, force_failover: bool) -> Prepared:
    """The `check` preflight plus the plan: refusals say why the run may not start (exit 3)."""
    seen = inspect(conn, inventory, max_lag)
    plan = plan_rolling(seen.topology, seen.states, inventory, nodes, replicas_only, max_lag, force_failover)
    found = [f"{f.subject}: {f.message}" for f in seen.findings
             if f.severity == CRITICAL and f.code not in PLAN_CHECKED]
    return Prepared(seen, plan, tuple(found) + plan.refusals)


def prepare_resume(conn: ConnectionOptions, inventory: Inventory, state: RunState) -> Prepared:
    """Preflight for --resume: the same members, healthy, except the node whose restart was cut short."""
    seen = inspect(conn, inventory, state.plan.max_lag)
    done = {r.index for r in state.records if r.status == DONE}
    plan, refreshed = refresh_commands(state.plan, inventory, seen.states, done)
    refusals = list(refreshed)
    now, then = {n.node_id for n in seen.topology.nodes}, {r.node_id for r in plan.roles}
    if now != then:
        refusals.append(f"the cluster's members changed since the state file was written ({len(now - then)} new, "
                        f"{len(then - now)} gone); move the state file aside and plan a new run")
    idx = state.first_unfinished()
    step = plan.steps[idx] if idx is not None else None
    excused = (step.address if step and idx is not None and step.action == RESTART
               and state.records[idx].run_id_before else None)
    for f in seen.findings:
        if f.severity != CRITICAL or f.code in PLAN_CHECKED:
            continue
        if not (f.subject == excused and f.code in RESUMABLE_ON_NODE):
            refusals.append(f"{f.subject}: {f.message}")
    rewind: tuple[int, ...] = ()
    if not refusals:  # the state file says where the run stopped; the live roles say where the cluster is
        clients = Clients(conn)
        try:
            serving = read_serving(clients, plan)
        finally:
            clients.close()
        live = {k: v.owner_id for k, v in serving.items()}
        found = reconcile(plan, done, live, restore_roles_command(state))
        rewind, refusals = found.rewind, [*refusals, *found.refusals]
    return Prepared(seen, plan, tuple(refusals), rewind)


def restore_roles_command(state: RunState) -> str:
    return f"clusterbak rolling-restart --seed {state.seed} --inventory {state.inventory} --restore-roles"


def apply_rewind(state: RunState, rewind: tuple[int, ...]) -> None:
    """Steps --resume must do again: from the first of them on, every record starts afresh."""
    if rewind:
        first = min(rewind)
        for i in range(first, len(state.records)):
            state.records[i] = StepRecord(i)


class RollingInterrupted(Interrupted):
    """A second Ctrl-C (or SIGTERM) stopped the run at once; the message says the step and how to go on."""


@dataclass
class _Ctx:
    plan: RollingPlan
    clients: Clients
    inventory: Inventory | None  # None: run_restore_roles, which restarts nothing
    options: RollingOptions
    on_event: Event
    persist: Callable[[], None]
    watch: Watchdog = None  # type: ignore[assignment]  # made by __post_init__ when not given
    pending: set[str] = field(default_factory=set)  # CLUSTER FAILOVER sent to these, switch not confirmed

    def __post_init__(self) -> None:
        self.watch = self.watch or Watchdog(self.clients, self.everyone)

    @property
    def everyone(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.plan.roles)

    def serving(self) -> dict[int, ShardServing]:
        return read_serving(self.clients, self.plan, frozenset(self.pending))


def run_rolling(state: RunState, state_path: Path, inventory: Inventory, conn: ConnectionOptions,
                options: RollingOptions, on_event: Event = lambda k, d: None, stop: StopFlag | None = None) -> dict:
    """Run every step not yet done; returns the result (status ok | failed | interrupted | not_restored)."""
    stop = stop or StopFlag()
    plan = state.plan
    started = time.monotonic()
    invocation: dict[str, Any] = {"started_at": time.time(), "resume": bool(state.invocations), "result": None}
    state.invocations.append(invocation)
    ctx = _Ctx(plan, Clients(conn), inventory, options, on_event, lambda: save_state(state_path, state))
    ctx.persist()
    outcome: dict = {"status": "ok", "error": None, "advice": None}
    step = None
    try:
        for step in plan.steps:
            rec = state.records[step.index]
            if rec.status == DONE:
                continue
            if stop.requested:
                outcome = _interrupted(plan, step, ctx.serving())
                break
            on_event("step", {"index": step.index, "total": len(plan.steps), "action": step.action,
                              "address": step.address, "why": step.why, "retry": rec.status != "pending"})
            rec.status, rec.error, rec.started_at = RUNNING, None, time.time()
            ctx.persist()
            try:
                # between steps: a node failing elsewhere stops the run before it acts (the step's own node
                # is judged by the step's interlock, which waits a while for a failover's replica to answer)
                ctx.watch(frozenset({step.address}), force=True)
                if step.action == RESTART:
                    _restart(step, rec, ctx)
                else:
                    _failover(step, rec, ctx, plan.expected_slot_map(step.index))
            except ClusterbakError as exc:
                rec.status, rec.error, rec.finished_at = FAILED, str(exc), time.time()
                ctx.persist()
                outcome = failed_outcome(plan, step, exc, ctx.serving())
                break
            rec.status, rec.finished_at = DONE, time.time()
            ctx.persist()
            on_event("step_done", {"index": step.index, **_timings(rec)})
        if outcome["status"] == "ok":
            state.final = final_check(ctx.clients, plan, state)
            state.finished = True
            if state.final["problems"]:
                outcome = {"status": "not_restored", "error": "; ".join(state.final["problems"]),
                           "advice": "look at `clusterbak topology`; give roles back with CLUSTER FAILOVER on the "
                                     "node that should be master"}
        serving = outcome.pop("serving", None) or ctx.serving()  # read when it is reported
        invocation.update(ended_at=time.time(), result=outcome["status"])
        ctx.persist()
    except BaseException as exc:  # a second Ctrl-C or a bug: the step stays "running" and --resume re-checks it
        invocation.update(ended_at=time.time(), result="aborted")
        ctx.persist()
        if isinstance(exc, KeyboardInterrupt) and step is not None:
            raise RollingInterrupted(
                f"stopped at once by a second interrupt during step {step.index + 1} of {len(plan.steps)} "
                f"({step.action} {step.address}); that step stays 'running' in {state_path}: run the same "
                "command with --resume, it re-checks the step and goes on") from None
        raise
    finally:
        ctx.clients.close()
    owners, summaries = serving_data(serving)
    return {
        **outcome,
        "steps_done": state.done_count,
        "steps_total": len(plan.steps),
        "serving": owners,
        "serving_detail": summaries,
        "duration_s": round(time.monotonic() - started, 2),
        "nodes": report_rows(state),
        "elapsed_since_start_s": round(time.time() - state.created_at, 2),
        "final": state.final,
    }


def _deadline(options: RollingOptions) -> Callable[[], float]:
    end = time.monotonic() + options.step_timeout
    return lambda: max(0.0, end - time.monotonic())


def _restart(step: Step, rec: StepRecord, ctx: _Ctx) -> None:
    left = _deadline(ctx.options)
    p = ctx.clients.probe(step.address)
    if rec.run_id_before and p.up and p.run_id != rec.run_id_before:
        ctx.on_event("note", {"message": f"{step.address} already restarted (run_id changed): re-checking its gates"})
        t0 = None
    else:
        if not (rec.run_id_before and not p.up):  # a node still down from a cut-short restart needs no interlock
            _must_be_replica(p, step)
            _master_must_serve(ctx.clients.probe(step.expect_master_address, cluster=False), step)
            rec.run_id_before = p.run_id
            ctx.persist()
        ctx.on_event("command", {"address": step.address, "command": step.command})
        t0 = time.monotonic()
        if ctx.options.node_action is not None:
            ctx.options.node_action(step, max(1.0, left()))
        else:
            # the plan refuses a restart without a restart_command; run_restore_roles restarts nothing
            assert step.command is not None and ctx.inventory is not None
            transport = open_transport(ctx.inventory.access(step.address), ctx.options.accept_new_host_keys)
            try:
                transport.run(step.command, timeout=max(1.0, left()), check=True)
            finally:
                transport.close()
        wait_gate(lambda: node_up_reason(ctx.clients.probe(step.address, cluster=False), rec.run_id_before),
                  left(), f"{step.address} back after its restart", watch=ctx.watch.excusing(step.address))
        rec.downtime_s = round(time.monotonic() - t0, 3)
    slot_map = ctx.plan.expected_slot_map(step.index)
    others = [a for a in ctx.everyone if a != step.address]
    since = {a: t for a in others if (t := ctx.clients.time_ms(a)) is not None}

    def synced() -> str | None:
        p = ctx.clients.probe(step.address)
        master = ctx.clients.probe(step.expect_master_address, cluster=False)
        if reason := node_up_reason(p, rec.run_id_before) or replica_reason(p, master, step.expect_master_id,
                                                                             ctx.plan.max_lag):
            return reason
        probes = ctx.clients.probe_all(ctx.everyone)
        return cluster_reason(probes, slot_map) or links_reason(probes, step.node_id, step.address, since)

    wait_gate(synced, left(), f"{step.address} in sync after its restart", watch=ctx.watch.excusing(step.address))
    if t0 is not None:
        rec.gate_s = round(time.monotonic() - t0, 3)
    rec.run_id_after = ctx.clients.probe(step.address, cluster=False).run_id
    ctx.on_event("restarted", {"address": step.address, **_timings(rec)})


def _must_be_replica(p, step: Step) -> None:
    if not p.up:
        raise StepFailed(f"{step.address} is unreachable before its restart: {p.error}")
    if p.role != "slave":
        slots = p.view.myself.slot_count if p.view and p.view.myself else 0
        raise StepFailed(f"refusing to restart {step.address}: it is a {p.role} serving {slots} slots, the plan "
                         f"expects a replica of {step.expect_master_address}; run `clusterbak topology`")
    if p.master_id != step.expect_master_id:
        raise StepFailed(f"refusing to restart {step.address}: it replicates {str(p.master_id)[:8]}, the plan "
                         f"expects {step.expect_master_address} ({step.expect_master_id[:8]})")


def _master_must_serve(master, step: Step) -> None:
    """Never restart a replica whose master is gone: it may hold the shard's only copy of the data."""
    if not master.up:
        raise ClusterFault(f"refusing to restart {step.address}: its master {step.expect_master_address} is down "
                           f"({master.error})", step.expect_master_address)
    if master.role != "master":
        raise StepFailed(f"refusing to restart {step.address}: its expected master {step.expect_master_address} "
                         f"is a {master.role} now; run `clusterbak topology`")


def _failover(step: Step, rec: StepRecord, ctx: _Ctx, slot_map) -> None:
    assert step.demote_address is not None and step.demote_id is not None  # a failover step names whom it demotes
    left = _deadline(ctx.options)
    promote, demote = ctx.clients.probe(step.address), ctx.clients.probe(step.demote_address)
    if switched_reason(promote, demote) is None and demote.master_id == step.node_id:
        ctx.on_event("note", {"message": f"{step.address} is already master (earlier run): confirming"})
        confirm_switch(ctx.clients, step.address, step.node_id, step.demote_id, ctx.everyone, slot_map, left(),
                       ctx.watch.excusing(tolerating=(step.address,)))
        ctx.pending.discard(step.address)
        return
    if not demote.up or demote.role != "master":
        raise StepFailed(f"{step.demote_address} should be the master of shard {step.shard} but is "
                         f"{demote.error or demote.role}; run `clusterbak topology`")
    why_not = replica_reason(promote, demote, step.demote_id, ctx.plan.max_lag)
    if why_not and not promote.up and not promote.refused:  # paused or busy, not gone: give it a while
        try:
            demote_address, demote_id = step.demote_address, step.demote_id
            wait_gate(lambda: replica_reason(ctx.clients.probe(step.address), ctx.clients.probe(
                demote_address, cluster=False), demote_id, ctx.plan.max_lag),
                min(left(), UNANSWERED_PATIENCE), f"{step.address} answering before its failover",
                watch=ctx.watch.excusing(tolerating=(step.address,), patient_with=(step.address,)))
            why_not = None
        except GateTimeout as exc:
            why_not = str(exc)
    if why_not:
        raise StepFailed(f"not failing over to {step.address}: {why_not}")
    force = ctx.plan.failover_mode == "force"
    ctx.on_event("command", {"address": step.address, "command": "CLUSTER FAILOVER" + (" FORCE" if force else "")})
    switch = failover_and_confirm(ctx.clients, step.address, step.node_id, step.demote_address, step.demote_id,
                                  ctx.everyone, slot_map, left(), force, ctx.watch,
                                  on_sent=lambda: ctx.pending.add(step.address))
    ctx.pending.discard(step.address)
    rec.window_s, rec.confirm_s, rec.attempts = round(switch.window_s, 3), round(switch.confirm_s, 3), switch.attempts
    ctx.on_event("switched", {"address": step.address, "demoted": step.demote_address, **_timings(rec)})


def _timings(rec: StepRecord) -> dict:
    keys = ("downtime_s", "gate_s", "window_s", "confirm_s")
    return {k: getattr(rec, k) for k in keys if getattr(rec, k) is not None}


def _interrupted(plan: RollingPlan, step: Step, serving: dict[int, ShardServing]) -> dict:
    note = ""
    if step.phase == "masters" and step.action != FAILOVER:  # stopped between a failover and its failback
        note = f"; meanwhile shard {step.shard} is {serving[step.shard].summary} (read just now)"
    return {"status": "interrupted", "error": f"stopped at your request before step {step.index + 1} of "
            f"{len(plan.steps)} ({step.action} {step.address}); every gate of the steps run so far passed",
            "advice": "run the same command with --resume to go on" + note, "serving": serving}


def failed_outcome(plan: RollingPlan, step: Step, exc: ClusterbakError, serving: dict[int, ShardServing]) -> dict:
    error = f"step {step.index + 1} ({step.action} {step.address}): {exc}"
    if isinstance(exc, ClusterFault):
        error = f"{exc.node} failed during step {step.index + 1} ({step.action} {step.address}): {exc}"
    return {"status": "failed", "error": error, "advice": advice(plan, step, serving, exc), "serving": serving}


def advice(plan: RollingPlan, step: Step, serving: dict[int, ShardServing], exc: Exception | None = None) -> str:
    """What to do next; who serves the shard is said from `serving`, read after the step stopped."""
    resume = "then run the same command with --resume: it re-checks this step and goes on"
    now = f"shard {step.shard} is {serving[step.shard].summary} (read just now)"
    if isinstance(exc, ClusterFault):
        whose = ("a node of this step" if exc.node in (step.address, step.demote_address, step.expect_master_address)
                 else "not a node this step handles")
        return (f"{exc.node} is {whose}. Bring it back (its log, its service), wait until "
                f"`clusterbak check` says READY, then run the same command with --resume: it compares the live roles "
                f"with the state file and, if a replica took over a shard meanwhile, asks for --restore-roles first. "
                f"Now: {_all(serving)}")
    if isinstance(exc, UnclearFailover):
        return (f"{now}. {step.address} may still run the CLUSTER FAILOVER it was sent: wait until `clusterbak "
                f"topology` shows one master for shard {step.shard}, {resume} (a switch that happened is confirmed)")
    if step.action == RESTART and step.phase == "replicas":
        if all(v.clear for v in serving.values()):
            now = f"every shard still has its master (read just now: {_all(serving)})"
        return (f"{step.address} is a replica; {now}. Look at {step.address} (its log, the restart command), "
                f"{resume}")
    if step.action == FAILOVER:
        return (f"{now}; nothing in it was restarted. Look at {step.address}'s log for the manual failover, "
                f"{resume}. --force-failover only for a dead master")
    if step.action == RESTART:
        node = Address.of(step.address)
        host, port = node.host, node.port
        return (f"{now}; {step.address} should be a replica of {step.expect_master_address}. Fix {step.address}, "
                f"{resume} (and fails back). By hand, once it is in sync: redis-cli -h {host} -p {port} CLUSTER "
                "FAILOVER")
    return f"{now}; {step.address} should be its replica; {resume}"


def _all(serving: dict[int, ShardServing]) -> str:
    return "; ".join(f"shard {k} {v.summary}" for k, v in serving.items())


def final_check(clients: Clients, plan: RollingPlan, state: RunState) -> dict:
    """Every target restarted (run_id changed since the start) and every node back in its original role."""
    problems, warnings, nodes = [], [], {}
    for role in plan.roles:
        p = clients.probe(role.address)
        me = p.view.myself if p.up and p.view else None
        now = "master" if p.role == "master" else "replica" if p.role == "slave" else "unreachable"
        nodes[role.node_id] = {"role_after": now, "master_after": me.master_id if me else None, "run_id": p.run_id}
        if role.role == "master":
            want = plan.shards[role.shard].slots
            if now != "master" or tuple(str(r) for r in (me.slots if me else ())) != want:
                problems.append(f"{role.address} was the master of shard {role.shard} and is now {now}")
        elif now != "replica":
            problems.append(f"{role.address} was a replica and is now {now}")
        elif (master_after := me.master_id if me else None) != role.master_id:
            warnings.append(f"{role.address} now replicates {str(master_after)[:8]}, not {str(role.master_id)[:8]}")
        if role.address in plan.targets and p.run_id == state.run_ids_at_start.get(role.node_id):
            problems.append(f"{role.address} did not restart (run_id unchanged)")
    return {"problems": problems, "warnings": warnings, "nodes": nodes}


def report_rows(state: RunState) -> list[dict]:
    """One row per node: role before/after, restarted, downtime, the write window of its shard's failovers."""
    plan, rows = state.plan, []
    finals = (state.final or {}).get("nodes", {})
    for role in plan.roles:
        restarts = [state.records[s.index] for s in plan.steps if s.action == RESTART and s.node_id == role.node_id]
        switches = [state.records[s.index] for s in plan.steps if (s.action == FAILOVER and s.demote_id == role.node_id)
                    or (s.action == FAILBACK and s.node_id == role.node_id)]
        rec = restarts[0] if restarts else None
        windows = [r.window_s for r in switches if r.window_s is not None]
        rows.append({
            "address": role.address, "node_id": role.node_id, "shard": role.shard, "role_before": role.role,
            "role_after": finals.get(role.node_id, {}).get("role_after"),
            "target": role.address in plan.targets, "status": rec.status if rec else "not planned",
            "downtime_s": rec.downtime_s if rec else None, "gate_s": rec.gate_s if rec else None,
            "windows_s": windows, "window_s": round(sum(windows), 3) if windows else None,
        })
    return rows


def prepare_restore_roles(conn: ConnectionOptions, state: RunState) -> tuple[tuple[Step, ...], tuple[str, ...]]:
    """The failovers that give every master its recorded role back, read from the live cluster now."""
    clients = Clients(conn)
    try:
        serving = read_serving(clients, state.plan)
    finally:
        clients.close()
    return plan_restore_roles(state.plan, {k: v.owner_id for k, v in serving.items()})


def run_restore_roles(state: RunState, steps: tuple[Step, ...], conn: ConnectionOptions, options: RollingOptions,
                      on_event: Event = lambda k, d: None) -> dict:
    """CLUSTER FAILOVER (default mode: no acknowledged write lost) on each recorded master that is not serving
    its shard now, confirmed like a rolling restart's failback. The state file is not changed: --resume
    compares the live roles with it again."""
    plan, started = state.plan, time.monotonic()
    ctx = _Ctx(plan, Clients(conn), None, options, on_event, lambda: None)
    demoted = {s.shard: s.demote_id for s in steps if s.demote_id is not None}
    owners = {sh.index: demoted.get(sh.index, sh.master_id) for sh in plan.shards}
    outcome: dict = {"status": "ok", "error": None, "advice": None}
    done = []
    try:
        for step in steps:
            on_event("step", {"index": step.index, "total": len(steps), "action": step.action,
                              "address": step.address, "why": step.why, "retry": False})
            owners[step.shard] = step.node_id
            rec = StepRecord(step.index)
            try:
                ctx.watch(frozenset({step.address}), force=True)
                _failover(step, rec, ctx, slot_map_for(plan.shards, owners))
            except ClusterbakError as exc:
                outcome = failed_outcome(plan, step, exc, ctx.serving())
                outcome["advice"] = (f"shard {step.shard} is {outcome['serving'][step.shard].summary} (read just now); "
                                     f"fix what the error names, then run --restore-roles again")
                break
            done.append({"shard": step.shard, "master": step.address, "from": step.demote_address,
                         "window_s": rec.window_s})
        serving = outcome.pop("serving", None) or ctx.serving()
    finally:
        ctx.clients.close()
    owners_now, summaries = serving_data(serving)
    return {**outcome, "switched": done, "steps_total": len(steps), "serving": owners_now,
            "serving_detail": summaries, "duration_s": round(time.monotonic() - started, 2)}
