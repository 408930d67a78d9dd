"""The rolling-restart planner on golden CLUSTER NODES outputs (pure: hand-made node states, no cluster)."""

import json
from pathlib import Path

import pytest

from clusterbak.errors import UsageError
from clusterbak.model.inventory import parse_inventory
from clusterbak.model.state import NodeState
from clusterbak.model.topology import parse_cluster_nodes
from clusterbak.plan.rolling import FAILBACK, FAILOVER, RESTART, RollingPlan, plan_rolling

GOLDEN = Path(__file__).parent / "golden"
RESTART_CMD = "systemctl restart redis@{port} # {host} {data_dir}"


def topo(name):
    return parse_cluster_nodes((GOLDEN / name).read_text())


def inventory(topology, **defaults):
    defaults = {"transport": "local", "restart_command": RESTART_CMD, **defaults}
    return parse_inventory({"defaults": defaults,
                            "nodes": {n.address: {"data_dir": f"/data/{n.port}"} for n in topology.nodes}}, "inv.toml")


def states(topology, lag=None, **info_by_address):
    """Every node reachable and in sync; lag={address: bytes} and info_by_address={address: {...}} override."""
    out = []
    for n in topology.nodes:
        info = {"role": "master" if n.is_master else "slave", "master_repl_offset": 5000,
                "slave_repl_offset": 5000 - (lag or {}).get(n.address, 0), "master_link_status": "up",
                "master_sync_in_progress": 0, "run_id": f"run-{n.port}"}
        info.update(info_by_address.get(n.address, {}))
        out.append(NodeState(node=n, info=info, cluster_info={"cluster_state": "ok"}, view=topology, dbsize=1,
                             config={"dir": f"/data/{n.port}"}))
    return tuple(out)


def test_3x1_replicas_first_then_failover_restart_failback_per_master():
    t = topo("nodes_3x1.txt")
    plan = plan_rolling(t, states(t), inventory(t))
    assert plan.ok and plan.failover_mode == "default"
    assert [(s.phase, s.action, s.address) for s in plan.steps] == [
        ("replicas", RESTART, "127.0.0.1:7103"), ("replicas", RESTART, "127.0.0.1:7104"),
        ("replicas", RESTART, "127.0.0.1:7105"),
        ("masters", FAILOVER, "127.0.0.1:7103"), ("masters", RESTART, "127.0.0.1:7100"),
        ("masters", FAILBACK, "127.0.0.1:7100"),
        ("masters", FAILOVER, "127.0.0.1:7104"), ("masters", RESTART, "127.0.0.1:7101"),
        ("masters", FAILBACK, "127.0.0.1:7101"),
        ("masters", FAILOVER, "127.0.0.1:7105"), ("masters", RESTART, "127.0.0.1:7102"),
        ("masters", FAILBACK, "127.0.0.1:7102"),
    ]
    assert [s.index for s in plan.steps] == list(range(12))
    failover, restart, failback = plan.steps[3:6]
    assert failover.demote_address == "127.0.0.1:7100" and failover.expect_master_address == "127.0.0.1:7103"
    assert restart.expect_master_address == "127.0.0.1:7103"  # the old master restarts as a replica
    assert failback.demote_address == "127.0.0.1:7103" and failback.expect_master_address == "127.0.0.1:7100"
    assert restart.command == "systemctl restart redis@7100 # 127.0.0.1 /data/7100"
    assert plan.targets == ("127.0.0.1:7103", "127.0.0.1:7104", "127.0.0.1:7105",
                            "127.0.0.1:7100", "127.0.0.1:7101", "127.0.0.1:7102")
    assert {r.address: r.role for r in plan.roles}["127.0.0.1:7100"] == "master"


def test_plan_matches_golden_json_and_round_trips(golden):
    t = topo("nodes_3x1.txt")
    plan = plan_rolling(t, states(t), inventory(t))
    text = json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n"
    golden("rolling_plan_3x1.json", text)
    assert RollingPlan.from_dict(json.loads(text)) == plan


def test_expected_slot_map_follows_the_failover_and_the_failback():
    t = topo("nodes_3x1.txt")
    plan = plan_rolling(t, states(t), inventory(t))
    a, b = t.by_address("127.0.0.1:7100").node_id, t.by_address("127.0.0.1:7103").node_id
    assert plan.expected_slot_map(2) == t.slot_map()  # replicas restarted: nothing moved
    assert dict(plan.expected_slot_map(3))["0-5460"] == b  # after CLUSTER FAILOVER
    assert dict(plan.expected_slot_map(4))["0-5460"] == b  # old master restarted as a replica
    assert plan.expected_slot_map(5) == t.slot_map()  # failed back
    assert dict(plan.expected_slot_map(6))["5461-10921"] != t.by_address("127.0.0.1:7101").node_id
    assert plan.expected_slot_map(11) == t.slot_map() and a in dict(plan.expected_slot_map(11)).values()


def test_3x2_fails_over_to_the_freshest_in_sync_replica():
    t = topo("nodes_3x2.txt")
    lag = {"127.0.0.1:7203": 10, "127.0.0.1:7206": 0, "127.0.0.1:7204": 500, "127.0.0.1:7207": 400}
    plan = plan_rolling(t, states(t, lag), inventory(t))
    failovers = {s.shard: s.address for s in plan.steps if s.action == FAILOVER}
    assert failovers[0] == "127.0.0.1:7206" and failovers[1] == "127.0.0.1:7207"
    assert len([s for s in plan.steps if s.phase == "replicas"]) == 6 and len(plan.steps) == 15


def test_master_without_in_sync_replica_is_refused_with_the_reason():
    t = topo("nodes_3x1.txt")
    s = states(t, **{"127.0.0.1:7104": {"master_link_status": "down"}})
    plan = plan_rolling(t, s, inventory(t))
    assert not plan.ok
    (refusal,) = plan.refusals
    assert "127.0.0.1:7101" in refusal and "master link is down" in refusal
    lagging = plan_rolling(t, states(t, {"127.0.0.1:7105": 9000}), inventory(t), max_lag=1000)
    assert any("9000 bytes behind" in x for x in lagging.refusals)
    no_replica = topo("nodes_3x0_failed.txt")
    assert any(
        "no in-sync replica" in x for x in plan_rolling(no_replica, states(no_replica), inventory(no_replica)).refusals
    )


def test_replicas_only_never_fails_over_and_ignores_shards_without_replica_sync():
    t = topo("nodes_3x1.txt")
    s = states(t, **{"127.0.0.1:7104": {"master_link_status": "down"}})
    plan = plan_rolling(t, s, inventory(t), replicas_only=True)
    assert plan.ok and {x.action for x in plan.steps} == {RESTART} and len(plan.steps) == 3


def test_nodes_subset_and_unknown_address():
    t = topo("nodes_3x1.txt")
    plan = plan_rolling(t, states(t), inventory(t), nodes=("127.0.0.1:7101", "127.0.0.1:7105"))
    assert [(s.action, s.address) for s in plan.steps] == [
        (RESTART, "127.0.0.1:7105"), (FAILOVER, "127.0.0.1:7104"), (RESTART, "127.0.0.1:7101"),
        (FAILBACK, "127.0.0.1:7101")]
    assert plan.nodes == ("127.0.0.1:7101", "127.0.0.1:7105")
    with pytest.raises(UsageError, match="127.0.0.1:9999"):
        plan_rolling(t, states(t), inventory(t), nodes=("127.0.0.1:9999",))
    masters_only_replicas = plan_rolling(t, states(t), inventory(t), nodes=("127.0.0.1:7100",), replicas_only=True)
    assert not masters_only_replicas.ok and any("nothing to restart" in x for x in masters_only_replicas.refusals)
    assert any("skipped" in w for w in masters_only_replicas.warnings)


def test_missing_restart_command_or_data_dir_is_refused():
    t = topo("nodes_3x1.txt")
    inv = parse_inventory({"defaults": {"transport": "local"}, "nodes": {n.address: {} for n in t.nodes}}, "inv.toml")
    plan = plan_rolling(t, states(t), inv)
    assert not plan.ok and any("no restart_command" in x and "inv.toml" in x for x in plan.refusals)
    inv = parse_inventory({"defaults": {"transport": "local", "restart_command": "restart {data_dir}"},
                           "nodes": {n.address: {} for n in t.nodes}}, "inv.toml")
    no_dir = tuple(NodeState(node=s.node, info=s.info, cluster_info=s.cluster_info, view=s.view) for s in states(t))
    assert any("data dir is unknown" in x for x in plan_rolling(t, no_dir, inv).refusals)
    assert plan_rolling(t, states(t), inv).steps[0].command == "restart /data/7103"  # CONFIG GET dir fills it


def test_force_failover_is_opt_in_and_warned():
    t = topo("nodes_3x1.txt")
    plan = plan_rolling(t, states(t), inventory(t), force_failover=True)
    assert plan.failover_mode == "force" and any("can be lost" in w for w in plan.warnings)
    assert plan_rolling(t, states(t), inventory(t)).failover_mode == "default"


def test_resume_takes_restart_commands_of_unfinished_steps_from_the_inventory_as_it_is_now():
    from clusterbak.plan.rolling import refresh_commands

    t = topo("nodes_3x1.txt")
    plan = plan_rolling(t, states(t), inventory(t, restart_command="false"))
    fixed, refusals = refresh_commands(plan, inventory(t), states(t), done={0})
    assert not refusals and fixed.steps[0].command == "false"  # done: kept as it ran
    assert fixed.steps[4].command == "systemctl restart redis@7100 # 127.0.0.1 /data/7100"
    assert [s.action for s in fixed.steps] == [s.action for s in plan.steps]
