"""Execute a RollingPlan one step at a time, gate after every step, keep a resumable state file.

Safety interlocks checked against the live cluster before every action, whatever the plan says:
a node is restarted only while it is a replica of the expected master (never a master serving slots), and
CLUSTER FAILOVER is sent only to an in-sync replica of the expected master. So a run that stops anywhere
(a failed step, a gate timeout, Ctrl-C) leaves every shard with a master.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from clusterbak.engine.inspect import Inspection, inspect
from clusterbak.engine.rolling_state import DONE, FAILED, RUNNING, RunState, StepRecord, save_state
from clusterbak.errors import ClusterbakError, StepFailed
from clusterbak.model.checks import CRITICAL
from clusterbak.model.inventory import Inventory
from clusterbak.plan.rolling import FAILBACK, FAILOVER, RESTART, RollingPlan, Step, plan_rolling, refresh_commands
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.failover import (
    Clients, cluster_reason, confirm_switch, failover_and_confirm, links_reason, node_up_reason, replica_reason,
    switched_reason, wait_gate,
)
from clusterbak.transports.factory import open_transport

Event = Callable[[str, dict], None]
PLAN_CHECKED = {"no_replica", "no_synced_replica"}  # the planner judges these, only for masters it restarts
RESUMABLE_ON_NODE = {"unreachable", "node_failing", "cluster_state"}  # the interrupted restart's own node


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
    plan, refusals = refresh_commands(state.plan, inventory, seen.states, done)
    refusals = list(refusals)
    now, then = {n.node_id for n in seen.topology.nodes}, {r.node_id for r in plan.roles}
    if now != then:
        refusals.append(f"the cluster's members changed since the state file was written ({len(now - then)} new, "
                        f"{len(then - now)} gone); move the state file aside and plan a new run")
    idx = state.first_unfinished()
    step = plan.steps[idx] if idx is not None else None
    excused = step.address if step and step.action == RESTART and state.records[idx].run_id_before else None
    for f in seen.findings:
        if f.severity != CRITICAL or f.code in PLAN_CHECKED:
            continue
        if not (f.subject == excused and f.code in RESUMABLE_ON_NODE):
            refusals.append(f"{f.subject}: {f.message}")
    return Prepared(seen, plan, tuple(refusals))


class StopFlag:
    """First Ctrl-C: finish the current step and its gate, then stop. Second Ctrl-C: stop now."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def on_sigint(self, notify: Callable[[], None]) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            notify()

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


@dataclass
class _Ctx:
    plan: RollingPlan
    clients: Clients
    inventory: Inventory
    options: RollingOptions
    on_event: Event
    persist: Callable[[], None]

    @property
    def everyone(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.plan.roles)


def run_rolling(state: RunState, state_path: Path, inventory: Inventory, conn: ConnectionOptions,
                options: RollingOptions, on_event: Event = lambda k, d: None, stop: StopFlag | None = None) -> dict:
    """Run every step not yet done; returns the result (status ok | failed | interrupted | not_restored)."""
    stop = stop or StopFlag()
    plan = state.plan
    started = time.monotonic()
    invocation = {"started_at": time.time(), "resume": bool(state.invocations), "result": None}
    state.invocations.append(invocation)
    ctx = _Ctx(plan, Clients(conn), inventory, options, on_event, lambda: save_state(state_path, state))
    ctx.persist()
    outcome: dict = {"status": "ok", "error": None, "advice": None}
    try:
        for step in plan.steps:
            rec = state.records[step.index]
            if rec.status == DONE:
                continue
            if stop.requested:
                outcome = _interrupted(plan, step)
                break
            on_event("step", {"index": step.index, "total": len(plan.steps), "action": step.action,
                              "address": step.address, "why": step.why, "retry": rec.status != "pending"})
            rec.status, rec.error, rec.started_at = RUNNING, None, time.time()
            ctx.persist()
            try:
                (_restart if step.action == RESTART else _failover)(step, rec, ctx)
            except ClusterbakError as exc:
                rec.status, rec.error, rec.finished_at = FAILED, str(exc), time.time()
                ctx.persist()
                outcome = {"status": "failed", "error": f"step {step.index + 1} ({step.action} "
                           f"{step.address}): {exc}", "advice": advice(plan, step)}
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
        serving = _serving(ctx)
        invocation.update(ended_at=time.time(), result=outcome["status"])
        ctx.persist()
    except BaseException:  # a second Ctrl-C or a bug: the step stays "running" and --resume re-checks it
        invocation.update(ended_at=time.time(), result="aborted")
        ctx.persist()
        raise
    finally:
        ctx.clients.close()
    return {**outcome, "steps_done": state.done_count, "steps_total": len(plan.steps), "serving": serving,
            "duration_s": round(time.monotonic() - started, 2), "nodes": report_rows(state),
            "elapsed_since_start_s": round(time.time() - state.created_at, 2), "final": state.final}


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
            rec.run_id_before = p.run_id
            ctx.persist()
        ctx.on_event("command", {"address": step.address, "command": step.command})
        t0 = time.monotonic()
        if ctx.options.node_action is not None:
            ctx.options.node_action(step, max(1.0, left()))
        else:
            transport = open_transport(ctx.inventory.access(step.address), ctx.options.accept_new_host_keys)
            try:
                transport.run(step.command, timeout=max(1.0, left()), check=True)
            finally:
                transport.close()
        wait_gate(lambda: node_up_reason(ctx.clients.probe(step.address, cluster=False), rec.run_id_before),
                  left(), f"{step.address} back after its restart")
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

    wait_gate(synced, left(), f"{step.address} in sync after its restart")
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


def _failover(step: Step, rec: StepRecord, ctx: _Ctx) -> None:
    left = _deadline(ctx.options)
    slot_map = ctx.plan.expected_slot_map(step.index)
    promote, demote = ctx.clients.probe(step.address), ctx.clients.probe(step.demote_address)
    if switched_reason(promote, demote) is None and demote.master_id == step.node_id:
        ctx.on_event("note", {"message": f"{step.address} is already master (earlier run): confirming"})
        confirm_switch(ctx.clients, step.address, step.node_id, step.demote_id, ctx.everyone, slot_map, left())
        return
    if not demote.up or demote.role != "master":
        raise StepFailed(f"{step.demote_address} should be the master of shard {step.shard} but is "
                         f"{demote.error or demote.role}; run `clusterbak topology`")
    why_not = replica_reason(promote, demote, step.demote_id, ctx.plan.max_lag)
    if why_not:
        raise StepFailed(f"not failing over to {step.address}: {why_not}")
    force = ctx.plan.failover_mode == "force"
    ctx.on_event("command", {"address": step.address, "command": "CLUSTER FAILOVER" + (" FORCE" if force else "")})
    switch = failover_and_confirm(ctx.clients, step.address, step.node_id, step.demote_address, step.demote_id,
                                  ctx.everyone, slot_map, left(), force)
    rec.window_s, rec.confirm_s, rec.attempts = round(switch.window_s, 3), round(switch.confirm_s, 3), switch.attempts
    ctx.on_event("switched", {"address": step.address, "demoted": step.demote_address, **_timings(rec)})


def _timings(rec: StepRecord) -> dict:
    keys = ("downtime_s", "gate_s", "window_s", "confirm_s")
    return {k: getattr(rec, k) for k in keys if getattr(rec, k) is not None}


def _interrupted(plan: RollingPlan, step: Step) -> dict:
    return {"status": "interrupted", "error": f"stopped at your request before step {step.index + 1} of "
            f"{len(plan.steps)} ({step.action} {step.address}); every gate of the steps run so far passed",
            "advice": "run the same command with --resume to go on" + _demoted_note(plan, step)}


def _demoted_note(plan: RollingPlan, step: Step) -> str:
    """Stopped between a failover and its failback: say who serves the shard meanwhile."""
    if step.action == FAILBACK:
        return f"; until then shard {step.shard} is served by {step.demote_address}, {step.address} is its replica"
    if step.action == RESTART and step.phase == "masters":
        return (f"; until then shard {step.shard} is served by {step.expect_master_address}, "
                f"{step.address} is its replica")
    return ""


def advice(plan: RollingPlan, step: Step) -> str:
    resume = "then run the same command with --resume: it re-checks this step and goes on"
    if step.action == RESTART and step.phase == "replicas":
        return (f"{step.address} is a replica: every shard still has its master. Look at {step.address} "
                f"(its log, the restart command), {resume}")
    if step.action == FAILOVER:
        return (f"shard {step.shard} is still served by {step.demote_address}; nothing in it was restarted. Look at "
                f"{step.address}'s log for the manual failover, {resume}. --force-failover only for a dead master")
    if step.action == RESTART:
        host, port = step.address.rsplit(":", 1)
        return (f"shard {step.shard} is served by {step.expect_master_address} (promoted); {step.address} should be "
                f"its replica. Fix {step.address}, {resume} (and fails back). By hand, once it is in sync: "
                f"redis-cli -h {host} -p {port} CLUSTER FAILOVER")
    return (f"shard {step.shard} is still served by {step.demote_address} and {step.address} is its replica; "
            f"{resume}")


def _serving(ctx: _Ctx) -> dict[str, str | None]:
    """shard -> address of the node serving its slots now, as the first reachable node sees it."""
    for address in ctx.everyone:
        p = ctx.clients.probe(address)
        if p.up:
            owners = {}
            for s in ctx.plan.shards:
                first = s.slots[0].split("-")[0] if s.slots else None
                owner = next((n for n in p.view.nodes if n.is_master and any(
                    str(r.start) == first for r in n.slots)), None) if first else None
                owners[str(s.index)] = owner.address if owner else None
            return owners
    return {}


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
            if now != "master" or tuple(str(r) for r in me.slots) != want:
                problems.append(f"{role.address} was the master of shard {role.shard} and is now {now}")
        elif now != "replica":
            problems.append(f"{role.address} was a replica and is now {now}")
        elif me.master_id != role.master_id:
            warnings.append(f"{role.address} now replicates {str(me.master_id)[:8]}, not {str(role.master_id)[:8]}")
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
