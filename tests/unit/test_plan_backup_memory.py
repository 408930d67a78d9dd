"""--saves-per-host: the memory the backup planner assumes per host (pure: hand-made node states)."""

from pathlib import Path

from clusterbak.model.inventory import parse_inventory
from clusterbak.model.state import NodeState
from clusterbak.model.topology import parse_cluster_nodes
from clusterbak.plan.backup import plan_backup

TOPO = parse_cluster_nodes((Path(__file__).parent / "golden" / "nodes_3x1.txt").read_text())
MB = 1 << 20


def states(cow_by_port: dict[int, int], used: int = 100 * MB, total: int = 1000 * MB):
    out = []
    for n in TOPO.nodes:
        info = {"role": "master" if n.is_master else "slave", "master_repl_offset": 1000, "slave_repl_offset": 1000,
                "master_link_status": "up", "master_sync_in_progress": 0, "used_memory": used,
                "total_system_memory": total, "rdb_last_cow_size": cow_by_port.get(n.port, 0)}
        out.append(NodeState(node=n, info=info, cluster_info={"cluster_state": "ok"}, view=TOPO, dbsize=1,
                             config={"dir": f"/data/{n.port}"}))
    return tuple(out)


def inventory():
    return parse_inventory({"defaults": {"transport": "local"},
                            "nodes": {n.address: {} for n in TOPO.nodes}}, "inv.toml")


def replica_ports():
    return [n.port for n in TOPO.nodes if not n.is_master]


def test_one_save_per_host_assumes_all_used_memory_plus_the_largest_cow():
    r = replica_ports()
    plan = plan_backup("b", TOPO, states({r[0]: 5 * MB, r[1]: 20 * MB, r[2]: 10 * MB}), inventory())
    [host] = plan.hosts  # the golden topology is one host
    assert (host.host, host.saves, host.used_memory, host.cow) == ("127.0.0.1", 1, 600 * MB, 20 * MB)
    assert host.assumed == 620 * MB and host.total_system_memory == 1000 * MB
    assert plan.to_dict()["hosts"][0]["assumed"] == 620 * MB and not plan.warnings


def test_more_saves_at_once_add_the_next_largest_and_warn_past_the_hosts_memory():
    r = replica_ports()
    plan = plan_backup("b", TOPO, states({r[0]: 5 * MB, r[1]: 20 * MB, r[2]: 10 * MB}), inventory(),
                       saves_per_host=2)
    assert (plan.hosts[0].saves, plan.hosts[0].cow) == (2, 30 * MB) and not plan.warnings
    tight = plan_backup("b", TOPO, states({}, used=150 * MB, total=1000 * MB), inventory(), saves_per_host=3)
    # no save measured yet: each source is assumed to copy all of its used_memory
    assert tight.hosts[0].cow == 450 * MB and tight.hosts[0].cow_from == "used_memory (no save measured yet)"
    assert tight.hosts[0].assumed == 1350 * MB
    assert len(tight.warnings) == 1 and "lower --saves-per-host" in tight.warnings[0] and tight.ok
