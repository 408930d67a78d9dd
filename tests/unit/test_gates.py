"""The in-sync replica rule (model/gates.py), the same for check, backup, the rolling plan and the live failover
gate: link up, no full sync, both offsets known, lag within --max-lag; the least lagging eligible replica wins."""

from __future__ import annotations

from clusterbak.model.checks import cluster_findings
from clusterbak.model.gates import ReplicaSync, eligible_replicas, sync_refusal
from clusterbak.model.state import NodeState
from clusterbak.model.topology import Node, Shard, SlotRange, build_topology
from clusterbak.plan.backup import choose_source
from clusterbak.plan.rolling import choose_failover_replica
from clusterbak.redisops.failover import replica_reason
from tests.unit.test_rolling_gates import A, B, probe


def test_sync_rule_link_sync_offsets_and_lag():
    ok = ReplicaSync("10.0.0.2:6379", link="up", syncing=False, offset=900)
    assert sync_refusal(ok, 1000, 100) is None
    assert sync_refusal(ok, 1000, 99) == "10.0.0.2:6379: 100 bytes behind its master (max 99)"
    down = sync_refusal(ReplicaSync("r:1", "down", False, 900), 1000, 100)
    assert "master link is down" in down and "master_link_status:down" in down
    assert "full sync" in sync_refusal(ReplicaSync("r:1", "up", True, 900), 1000, 100)
    assert sync_refusal(ReplicaSync("r:1", "up", False, 1200), 1000, 0) is None  # ahead of a stale master read: 0


def test_an_unknown_offset_refuses_on_either_side():
    assert "replication offset unknown" in sync_refusal(ReplicaSync("r:1", "up", False, 900), None, 100)
    assert "replication offset unknown" in sync_refusal(ReplicaSync("r:1", "up", False, None), 1000, 100)


def test_live_failover_gate_refuses_when_the_master_reports_no_offset():
    """The master answered but its INFO has no master_repl_offset: the lag cannot be judged, so the replica is not
    known to be in sync. (The old gate read the missing offset as 0, computed a negative lag and passed.)"""
    master = probe(A)
    master = type(master)(master.address, info={k: v for k, v in master.info.items() if k != "master_repl_offset"},
                          cluster_state="ok", view=master.view)
    reason = replica_reason(probe(B, slave_repl_offset=5000), master, A.node_id, 100)
    assert reason is not None and "replication offset unknown" in reason


def test_live_failover_gate_refuses_when_the_replica_reports_no_offset():
    replica = probe(B)
    replica = type(replica)(replica.address, info={k: v for k, v in replica.info.items() if k != "slave_repl_offset"},
                            cluster_state="ok", view=replica.view)
    reason = replica_reason(replica, probe(A, master_repl_offset=0), A.node_id, 100)
    assert reason is not None and "replication offset unknown" in reason


def _node(port: int, master_id: str | None = None) -> Node:
    nid = f"{port:040x}"
    return Node(nid, "127.0.0.1", port, port + 10000, "", frozenset({"slave" if master_id else "master"}),
                master_id, 0, 0, 1, "connected", (SlotRange(0, 16383),) if master_id is None else ())


def _state(node: Node, **info: object) -> NodeState:
    base: dict[str, object] = ({"role": "master", "master_repl_offset": 1000} if node.is_master else
                               {"role": "slave", "master_link_status": "up", "master_sync_in_progress": 0,
                                "slave_repl_offset": 1000})
    return NodeState(node=node, info={**base, **info})


def test_least_lagging_eligible_replica_ties_broken_by_address():
    m = _node(7000)
    r1, r2, r3 = _node(7003, m.node_id), _node(7001, m.node_id), _node(7002, m.node_id)
    shard = Shard(m, (r1, r2, r3))
    by_id = {s.node.node_id: s for s in (_state(m), _state(r1, slave_repl_offset=990),
                                         _state(r2, slave_repl_offset=990), _state(r3, master_link_status="down"))}
    eligible, reasons = eligible_replicas(shard, by_id, 100)
    assert [(e.node.address, e.lag) for e in eligible] == [("127.0.0.1:7001", 10), ("127.0.0.1:7003", 10)]
    assert len(reasons) == 1 and "127.0.0.1:7002" in reasons[0]
    # backup and the rolling plan pick that same replica
    assert choose_source(shard, by_id, "replica", 100)[0] == r2
    assert choose_failover_replica(shard, by_id, 100)[0] == r2


def test_unknown_master_offset_refuses_in_check_backup_and_rolling_alike():
    m = _node(7000)
    r = _node(7001, m.node_id)
    shard = Shard(m, (r,))
    by_id = {m.node_id: NodeState(node=m, info={"role": "master"}),  # INFO without master_repl_offset
             r.node_id: _state(r)}
    node, why = choose_source(shard, by_id, "replica", 100)
    assert node is None and "replication offset unknown" in why
    node, why = choose_failover_replica(shard, by_id, 100)
    assert node is None and "replication offset unknown" in why
    found = cluster_findings(build_topology((m, r)), tuple(by_id.values()), 100)
    assert any(f.code == "no_synced_replica" and "replication offset unknown" in f.message for f in found)
