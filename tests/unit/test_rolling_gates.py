"""Rolling-restart gates (pure functions of probes), the resumable state file, and the per-node report."""

import json
from dataclasses import replace
from pathlib import Path

from clusterbak.engine.rolling import advice, report_rows
from clusterbak.engine.rolling_live import judge_serving
from clusterbak.engine.rolling_state import DONE, RunState, default_state_path, load_state, save_state
from clusterbak.model.topology import build_topology, parse_cluster_nodes
from clusterbak.plan.rolling import Reconciled, plan_restore_roles, plan_rolling, reconcile
from clusterbak.redisops.failover import (
    Probe,
    cluster_reason,
    fault_reason,
    links_reason,
    node_up_reason,
    replica_reason,
    roles_agree_reason,
    switched_reason,
)
from tests.unit.test_plan_rolling import inventory, states

GOLDEN = Path(__file__).parent / "golden"
TOPO = parse_cluster_nodes((GOLDEN / "nodes_3x1.txt").read_text())
A, B = TOPO.by_address("127.0.0.1:7100"), TOPO.by_address("127.0.0.1:7103")


def view_from(address, topology=TOPO):
    """The same cluster as seen from `address` (its line carries the myself flag)."""
    nodes = tuple(replace(n, flags=(n.flags - {"myself"}) | ({"myself"} if n.address == address else set()))
                  for n in topology.nodes)
    return build_topology(nodes)


def probe(node, topology=TOPO, **info):
    base = {"role": "master" if node.is_master else "slave", "run_id": "new", "loading": 0,
            "master_link_status": "up", "master_sync_in_progress": 0, "master_repl_offset": 100,
            "slave_repl_offset": 100}
    return Probe(node.address, info={**base, **info}, cluster_state="ok", view=view_from(node.address, topology))


def all_probes(topology=TOPO, **overrides):
    return {n.address: overrides.get(n.address) or probe(n, topology) for n in topology.nodes}


def test_node_up_needs_an_answer_loaded_data_and_a_new_run_id():
    assert node_up_reason(Probe(B.address, error="cannot reach 127.0.0.1:7103"), "old") == "cannot reach 127.0.0.1:7103"
    assert "loading:1" in node_up_reason(probe(B, loading=1), "old")
    assert "has not restarted" in node_up_reason(probe(B, run_id="old"), "old")
    assert node_up_reason(probe(B, run_id="new"), "old") is None


def test_replica_gate_link_sync_offset_and_master():
    master = probe(A, master_repl_offset=5000)
    assert replica_reason(probe(B, slave_repl_offset=5000), master, A.node_id, 100) is None
    assert "master_link_status:down" in replica_reason(probe(B, master_link_status="down"), master, A.node_id, 100)
    assert "full sync" in replica_reason(probe(B, master_sync_in_progress=1), master, A.node_id, 100)
    assert "4000 bytes behind" in replica_reason(probe(B, slave_repl_offset=1000), master, A.node_id, 100)
    assert "expected" in replica_reason(probe(B), master, "f" * 40, 100)
    lone = probe(A)  # a node that came back as a master: lost nodes.conf
    assert "not as a replica" in replica_reason(lone, master, B.node_id, 100)


def test_cluster_gate_state_slot_map_and_failing_flags():
    probes = all_probes()
    assert cluster_reason(probes, TOPO.slot_map()) is None
    bad = dict(probes, **{A.address: replace(probes[A.address], cluster_state="fail")})
    assert "cluster_state is fail as seen from 127.0.0.1:7100" == cluster_reason(bad, TOPO.slot_map())
    moved = tuple((r, B.node_id if o == A.node_id else o) for r, o in TOPO.slot_map())
    assert "slot map differs" in cluster_reason(probes, moved)
    failed = parse_cluster_nodes((GOLDEN / "nodes_failed_master.txt").read_text())
    fp = {n.address: probe(n, failed) for n in failed.nodes if not n.is_failing}
    assert "flags 127.0.0.1:7102 as fail" in cluster_reason(fp, failed.slot_map())


def test_links_gate_waits_for_a_fresh_pong_from_every_observer():
    probes = all_probes()
    pong = TOPO.by_address("127.0.0.1:7100").pong_recv  # every view here shares the golden pong times
    since = {a: pong - 1 for a in probes if a != A.address}
    assert links_reason(probes, A.node_id, A.address, since) is None
    since["127.0.0.1:7101"] = pong + 1
    assert links_reason(probes, A.node_id, A.address, since) == \
        "127.0.0.1:7101 has not heard a PONG from the restarted 127.0.0.1:7100 yet"


def test_switch_confirmed_only_when_both_nodes_and_every_view_agree():
    assert "still slave" in switched_reason(probe(B), probe(A))
    assert switched_reason(probe(B, role="master"), probe(A, role="slave")) is None
    probes = all_probes()
    assert "still sees 127.0.0.1:7103 as replica" in roles_agree_reason(probes, B.node_id, A.node_id)
    after = build_topology(tuple(
        replace(n, flags=frozenset({"master"}), master_id=None, slots=A.slots) if n is B else
        replace(n, flags=frozenset({"slave"}), master_id=B.node_id, slots=()) if n is A else n for n in TOPO.nodes))
    assert roles_agree_reason(all_probes(after), B.node_id, A.node_id) is None


def test_state_file_round_trip_is_atomic_and_beside_the_inventory(tmp_path):
    plan = plan_rolling(TOPO, states(TOPO), inventory(TOPO))
    assert default_state_path(tmp_path / "inventory.toml") == tmp_path / "inventory.rolling-restart.json"
    path = default_state_path(tmp_path / "inventory.toml")
    assert load_state(path) is None
    state = RunState.new(plan, "127.0.0.1:7100", str(tmp_path / "inventory.toml"), {A.node_id: "r1"})
    state.records[0].status, state.records[0].downtime_s = DONE, 0.25
    save_state(path, state)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    again = load_state(path)
    assert again.plan == plan and again.records[0].downtime_s == 0.25 and again.first_unfinished() == 1
    assert json.loads(path.read_text())["kind"] == "clusterbak-rolling-restart"


def test_report_rows_and_advice_name_the_shard_and_what_to_do():
    plan = plan_rolling(TOPO, states(TOPO), inventory(TOPO))
    state = RunState.new(plan, "s", "i", {})
    state.records[3].window_s, state.records[5].window_s, state.records[4].downtime_s = 0.1, 0.2, 0.5
    rows = {r["address"]: r for r in report_rows(state)}
    assert rows["127.0.0.1:7100"]["window_s"] == 0.3 and rows["127.0.0.1:7100"]["downtime_s"] == 0.5
    assert rows["127.0.0.1:7103"]["window_s"] is None and rows["127.0.0.1:7103"]["role_before"] == "replica"
    after = build_topology(tuple(  # the live cluster after shard 0's failover: 7103 serves it
        replace(n, flags=frozenset({"master"}), master_id=None, slots=A.slots) if n is B else
        replace(n, flags=frozenset({"slave"}), master_id=B.node_id, slots=()) if n is A else n for n in TOPO.nodes))
    text = advice(plan, plan.steps[4], judge_serving(all_probes(after), plan))
    assert "shard 0 is served by 127.0.0.1:7103 (6 of 6 nodes agree)" in text
    assert "--resume" in text and "CLUSTER FAILOVER" in text
    # the owner is said from the live read, not from what the step expected
    assert "shard 0 is served by 127.0.0.1:7103" in advice(plan, plan.steps[3], judge_serving(all_probes(after), plan))
    assert "shard 0 is served by 127.0.0.1:7100" in advice(plan, plan.steps[3], judge_serving(all_probes(), plan))


def test_serving_is_unclear_when_views_disagree_the_owner_fails_or_a_failover_is_unanswered():
    plan = plan_rolling(TOPO, states(TOPO), inventory(TOPO))
    probes = all_probes()
    assert judge_serving(probes, plan)[0].owner == A.address
    paused = dict(probes, **{B.address: Probe(B.address, error="cannot reach 127.0.0.1:7103: Timeout")})
    assert judge_serving(paused, plan)[0].owner == A.address, "a down replica alone does not cloud the shard"
    unclear = judge_serving(paused, plan, frozenset({B.address}))[0]
    assert unclear.owner is None and "CLUSTER FAILOVER sent to 127.0.0.1:7103 is unanswered" in unclear.summary
    assert "127.0.0.1:7100 per" in unclear.summary  # the views observed are printed with it
    gone = dict(probes, **{B.address: Probe(B.address, error="cannot reach 127.0.0.1:7103: refused", refused=True)})
    assert judge_serving(gone, plan, frozenset({B.address}))[0].owner == A.address, "a dead node takes nothing over"
    dead = dict(probes, **{A.address: Probe(A.address, error="cannot reach 127.0.0.1:7100: refused")})
    s0 = judge_serving(dead, plan)[0]
    assert s0.owner is None and "127.0.0.1:7100 is unreachable" in s0.summary and "UNCLEAR" in s0.summary
    failed = parse_cluster_nodes((GOLDEN / "nodes_failed_master.txt").read_text())
    fplan = plan_rolling(failed, states(failed), inventory(failed))
    fp = {n.address: probe(n, failed) for n in failed.nodes if not n.is_failing}
    dead_one = next(n for n in failed.nodes if n.is_failing)
    fp[dead_one.address] = Probe(dead_one.address, error="refused")
    verdicts = judge_serving(fp, fplan)
    assert all(v.owner != dead_one.address for v in verdicts.values()), "a dead node is never said to serve"


def test_fault_names_a_node_the_step_does_not_handle():
    probes = all_probes()
    assert fault_reason(probes, frozenset(), {}, 10.0) is None
    down = dict(probes, **{A.address: Probe(A.address, error="cannot reach 127.0.0.1:7100")})
    assert fault_reason(down, frozenset(), {A.address: 9.5}, 10.0) is None, "within the grace"
    node, why = fault_reason(down, frozenset(), {A.address: 7.0}, 10.0)
    assert node == A.address and "unreachable for 3.0s" in why
    assert fault_reason(down, frozenset({A.address}), {A.address: 0.0}, 10.0) is None, "the restarted node"
    patient = frozenset({A.address})  # a failover's replica with CLUSTER FAILOVER pending: paused is not dead
    assert fault_reason(down, frozenset(), {A.address: 0.0}, 10.0, patient=patient) is None
    gone = dict(probes, **{A.address: Probe(A.address, error="cannot reach 127.0.0.1:7100: refused", refused=True)})
    assert fault_reason(gone, frozenset(), {A.address: 0.0}, 10.0, patient=patient)[0] == A.address
    failed = parse_cluster_nodes((GOLDEN / "nodes_failed_master.txt").read_text())
    dead = next(n for n in failed.nodes if n.is_failing)
    fp = {n.address: probe(n, failed) for n in failed.nodes if not n.is_failing}
    node, why = fault_reason(fp, frozenset(), {}, 10.0)
    assert node == dead.address and "flagged fail" in why
    assert fault_reason(fp, frozenset({dead.address}), {}, 10.0) is None
    suspected = build_topology(tuple(replace(n, flags=n.flags | {"fail?"}) if n is A else n for n in TOPO.nodes))
    one_view = dict(probes, **{B.address: probe(B, suspected)})  # one node's opinion: stale after its own pause
    assert fault_reason(one_view, frozenset(), {}, 10.0, suspect_since={A.address: 9.0}) is None
    node, why = fault_reason(one_view, frozenset(), {}, 10.0, suspect_since={A.address: 7.0})
    assert node == A.address and "flagged fail? by 1 node(s) (127.0.0.1:7103)" in why
    assert fault_reason(one_view, frozenset(), {}, 10.0, tolerated=frozenset({A.address}),
                        suspect_since={A.address: 0.0}) is None, "tolerated while it answers"
    stale = dict(probes, **{B.address: replace(probes[B.address], cluster_state="fail")})
    assert fault_reason(stale, frozenset(), {}, 10.0) == (
        B.address,
        "cluster_state is fail as seen from 127.0.0.1:7103",
    )


def test_resume_reconciles_the_state_file_with_the_live_roles():
    plan = plan_rolling(TOPO, states(TOPO), inventory(TOPO))
    original = {s.index: s.master_id for s in plan.shards}
    cmd = "clusterbak rolling-restart --restore-roles"
    assert reconcile(plan, set(range(3)), original, cmd) == Reconciled((), ())
    fo = next(s for s in plan.steps if s.action == "failover" and s.shard == 0)
    done = set(range(fo.index + 1))  # shard 0 failed over, its old master's restart is next
    assert reconcile(plan, done, {**original, 0: fo.node_id}, cmd) == Reconciled((), ())
    assert reconcile(plan, done, original, cmd) == Reconciled((fo.index,), ()), "roles given back: fail over again"
    assert reconcile(plan, set(range(fo.index)), {**original, 0: fo.node_id}, cmd).refusals == (), "late switch"
    swapped = {**original, 2: "1702fbe8feb31681aa11f7b7e3302e0564e53c9a"}  # a replica took shard 2 over
    (refusal,) = reconcile(plan, done, {**swapped, 0: fo.node_id}, cmd).refusals
    assert "shard 2 is served by 127.0.0.1:7105" in refusal and "127.0.0.1:7102" in refusal and cmd in refusal
    (refusal,) = reconcile(plan, done, {**original, 0: fo.node_id, 1: None}, cmd).refusals
    assert "shard 1 is no clear master" in refusal
    steps, refusals = plan_restore_roles(plan, swapped)
    assert refusals == () and [(s.address, s.demote_address) for s in steps] == [("127.0.0.1:7102", "127.0.0.1:7105")]
    assert plan_restore_roles(plan, original) == ((), ())
    assert "unclear" in plan_restore_roles(plan, {**original, 1: None})[1][0]
