"""Preflight findings from hand-made node states (the model is pure, so fakes are fine here)."""

from pathlib import Path

from clusterbak.model.checks import cluster_findings, has_critical, node_findings
from clusterbak.model.gates import replica_refusal
from clusterbak.model.state import NodeState
from clusterbak.model.topology import parse_cluster_nodes

GOLDEN = Path(__file__).parent / "golden"
TOPO = parse_cluster_nodes((GOLDEN / "nodes_3x1.txt").read_text())
GOOD_CFG = {"dir": "/data", "dbfilename": "dump.rdb", "cluster-config-file": "nodes.conf", "rdbchecksum": "yes",
            "appendonly": "no", "save": "3600 1", "stop-writes-on-bgsave-error": "yes"}


def state(node, **over):
    info = {"role": "master" if node.is_master else "slave", "master_repl_offset": 1000, "slave_repl_offset": 1000,
            "master_link_status": "up", "master_sync_in_progress": 0, "used_memory": 10, "total_system_memory": 1000}
    info.update(over.pop("info", {}))
    return NodeState(node=node, info=info, cluster_info={"cluster_state": "ok"}, view=TOPO, dbsize=1,
                     config=over.pop("config", GOOD_CFG), **over)


def healthy():
    return tuple(state(n) for n in TOPO.nodes)


def codes(findings):
    return {f.code for f in findings if f.severity == "critical"}


def test_healthy_cluster_has_no_critical_finding():
    findings = cluster_findings(TOPO, healthy())
    for s in healthy():
        findings += node_findings(s)
    assert not has_critical(tuple(findings))


def test_unreachable_node_and_fail_state_are_critical():
    states = list(healthy())
    states[0] = NodeState(node=states[0].node, error="cannot reach 127.0.0.1:7100")
    states[1] = state(states[1].node)
    states[1] = NodeState(
        **{**{f: getattr(states[1], f) for f in NodeState.__slots__}, "cluster_info": {"cluster_state": "fail"}}
    )
    found = cluster_findings(TOPO, tuple(states))
    assert {"unreachable", "cluster_state"} <= codes(found)


def test_lagging_or_down_replica_leaves_shard_without_synced_replica():
    states = list(healthy())
    replica = TOPO.shards[0].replicas[0]
    idx = [s.node for s in states].index(replica)
    states[idx] = state(replica, info={"slave_repl_offset": 10})
    found = cluster_findings(TOPO, tuple(states), max_lag=100)
    msg = [f.message for f in found if f.code == "no_synced_replica"]
    assert msg and "990 bytes behind" in msg[0]
    states[idx] = state(replica, info={"master_link_status": "down"})
    assert "master link is down" in replica_refusal(states[idx], states[0], 100)


def test_relative_dir_is_critical_and_names_the_node():
    s = state(TOPO.nodes[0], config={**GOOD_CFG, "dir": "./"})
    (f,) = [f for f in node_findings(s) if f.severity == "critical"]
    assert f.code == "dir_relative" and f.subject == TOPO.nodes[0].address


def test_disabled_config_is_reported_not_crashed_on():
    s = state(TOPO.nodes[0], config={}, config_error="CONFIG GET refused (unknown command)")
    found = node_findings(s)
    assert [f.code for f in found if f.code == "config_unavailable"] and not has_critical(tuple(found))


def test_fork_headroom_and_running_save_warn():
    s = state(TOPO.nodes[0], info={"used_memory": 600, "total_system_memory": 1000, "rdb_bgsave_in_progress": 1,
                                   "latest_fork_usec": 900000})
    warn = {f.code for f in node_findings(s) if f.severity == "warning"}
    assert {"fork_headroom", "bgsave_running", "slow_fork"} <= warn


def test_open_slot_and_uncovered_slots_are_critical():
    topo = parse_cluster_nodes((GOLDEN / "nodes_migrating_from_source.txt").read_text())
    assert "open_slot" in codes(cluster_findings(topo, ()))
    topo = parse_cluster_nodes((GOLDEN / "nodes_3x0_failed.txt").read_text())
    assert {"slots_uncovered", "node_failing", "no_replica"} <= codes(cluster_findings(topo, ()))


def test_a_node_whose_view_gives_a_slot_range_to_another_owner_disagrees():
    text = (GOLDEN / "nodes_3x1.txt").read_text()
    masters = [n for n in TOPO.nodes if n.is_master]
    swapped = parse_cluster_nodes(text.replace(masters[0].node_id, "f" * 40).replace(masters[1].node_id,
                                                                                     masters[0].node_id))
    states = list(healthy())
    states[2] = NodeState(**{**{f: getattr(states[2], f) for f in NodeState.__slots__}, "view": swapped})
    states[3] = NodeState(**{**{f: getattr(states[3], f) for f in NodeState.__slots__},
                             "view": parse_cluster_nodes(text)})  # its own parse, same map: agrees
    findings = [f for f in cluster_findings(TOPO, tuple(states)) if f.code == "slot_map_disagrees"]
    assert [f.subject for f in findings] == [states[2].node.address]
