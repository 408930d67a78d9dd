"""Pure rules behind the fault handling: prune keepers, pin and leftover findings, lock names, nodes.conf candidates."""

from clusterbak.model.checks import leftover_findings, pin_findings
from clusterbak.model.inventory import NodeAccess
from clusterbak.plan.backup import down_node_conf_candidates
from clusterbak.plan.prune import Candidate, plan_prune
from clusterbak.redisops.runlock import decode_name, encode_name

from .test_checks import GOOD_CFG, TOPO, state

DAY = 86400.0


def decisions(sets, keep_last=1):
    return {d.backup_id: (d.action, d.reason) for d in plan_prune(sets, 10 * DAY, keep_last)}


def test_prune_never_deletes_the_newest_verified_set_nor_counts_a_failed_one():
    sets = [Candidate("a", "complete", 1 * DAY, "ok"), Candidate("b", "complete", 2 * DAY, "failed")]
    got = decisions(sets)
    assert got["a"] == ("keep", "newest verified")  # the old rule kept only "b", the newest complete
    assert got["b"][0] == "keep" and "not a keeper" in got["b"][1]  # nothing newer and good yet
    sets.append(Candidate("c", "complete", 3 * DAY, "never"))
    got = decisions(sets)
    assert got["c"] == ("keep", "newest complete set") and got["a"] == ("keep", "newest verified")
    assert got["b"] == ("delete", "failed verification: not a keeper, a newer good set exists")


def test_incomplete_sets_are_not_keepers():
    sets = [
        Candidate("a", "incomplete", 1 * DAY),
        Candidate("b", "complete", 2 * DAY),
        Candidate("c", "incomplete", 3 * DAY),
    ]
    got = decisions(sets)
    assert got["a"][0] == "delete" and got["b"] == ("keep", "newest complete set") and got["c"][0] == "keep"


def test_pins_that_differ_are_critical_unless_a_run_holds_the_lock():
    node = TOPO.nodes[3]
    pinned = state(
        node, config={**GOOD_CFG, "appendonly": "yes", "appendfsync": "no", "auto-aof-rewrite-percentage": "0"}
    )
    pins = {node.address: ({"appendfsync": "everysec", "auto-aof-rewrite-percentage": "100"}, "pinned by x")}
    [f] = pin_findings((pinned,), pins, "h:1")
    assert f.severity == "critical" and "clusterbak unpin --seed h:1" in f.message and "'everysec'" in f.message
    [f] = pin_findings((pinned,), pins, "h:1", running="backup by pid 1")
    assert f.severity == "warning"
    back = state(
        node, config={**GOOD_CFG, "appendonly": "yes", "appendfsync": "everysec", "auto-aof-rewrite-percentage": "100"}
    )
    [f] = pin_findings((back,), pins, "h:1")
    assert (f.severity, f.code) == ("info", "pin_record_stale")
    [f] = pin_findings((pinned,), {}, "h:1")  # no record: someone set it by hand
    assert (f.severity, f.code) == ("warning", "appendfsync_no")


def test_temp_leftovers_warn_only_when_no_child_is_running():
    files = [("/data/temp-123.rdb", 5), ("/data/appendonlydir/temp-rewriteaof-bg-9.aof", 7)]
    [f] = leftover_findings("h:1", files, saving=False)
    assert f.severity == "warning" and "12 bytes" in f.message and "temp-123.rdb" in f.message
    assert leftover_findings("h:1", files, saving=True)[0].severity == "info"
    assert leftover_findings("h:1", [], saving=False) == []


def test_lock_names_round_trip_and_foreign_names_are_ignored():
    name = encode_name("ctl-1", 42, "backup", 1700000000.5, "abcd")
    assert " " not in name and decode_name(name) == {"host": "ctl-1", "pid": 42, "command": "backup",
                                                     "started_at": 1700000000.5, "token": "abcd"}
    assert decode_name("app-worker-3") is None and decode_name("clusterbak-lock:!!!") is None


def test_down_node_conf_candidates_in_order():
    access = NodeAccess(address="10.0.0.5:7003", data_dir="/var/lib/redis", cluster_config_file="cluster.conf")
    assert down_node_conf_candidates(access) == ("/var/lib/redis/cluster.conf", "/var/lib/redis/nodes-7003.conf",
                                                 "/var/lib/redis/nodes.conf")
    assert down_node_conf_candidates(NodeAccess(address="h:7003")) == ()
