"""Rolling-restart gates (pure functions of probes), the resumable state file, and the per-node report."""

import json
from dataclasses import replace
from pathlib import Path

from clusterbak.engine.rolling import advice, report_rows
from clusterbak.engine.rolling_state import DONE, RunState, default_state_path, load_state, save_state
from clusterbak.model.topology import build_topology, parse_cluster_nodes
from clusterbak.plan.rolling import plan_rolling
from clusterbak.redisops.failover import (
    Probe, cluster_reason, links_reason, node_up_reason, replica_reason, roles_agree_reason, switched_reason,
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
    text = advice(plan, plan.steps[4])
    assert "served by 127.0.0.1:7103" in text and "--resume" in text and "CLUSTER FAILOVER" in text
    assert "still served by 127.0.0.1:7100" in advice(plan, plan.steps[3])
