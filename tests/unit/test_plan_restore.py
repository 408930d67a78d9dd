"""Restore planning from a hand-made manifest (pure: no cluster needed)."""

import tomllib

import pytest

from clusterbak.errors import UsageError
from clusterbak.model.inventory import parse_inventory
from clusterbak.model.manifest import parse_manifest
from clusterbak.plan.restore import TargetState, parse_maps, plan_restore
from tests.unit.manifest_docs import doc

MANIFEST = parse_manifest(doc(), "sets/b1")
INV = '''[defaults]
transport = "local"
start_command = "start {port}"
[nodes."10.0.0.1:6379"]
data_dir = "/d1"
[nodes."10.0.0.2:6379"]
data_dir = "/d2"
[nodes."10.0.0.3:7000"]
data_dir = "/d3"
'''


def inventory():
    return parse_inventory(tomllib.loads(INV), "inv.toml")


@pytest.mark.parametrize("bad", ["10.0.0.1:6379", "10.0.0.1:6379=nohost", "10.0.0.1:6379=h:70@x"])
def test_malformed_maps_are_usage_errors(bad):
    with pytest.raises(UsageError, match="--map"):
        parse_maps([bad])


def test_same_addresses_plan_both_nodes_with_their_shard_dump():
    plan = plan_restore(MANIFEST, inventory(), {}, {})
    assert plan.ok and [n.dump_source for n in plan.nodes] == ["shard-00.rdb.zst"] * 2
    assert [n.stop for n in plan.nodes] == ["SHUTDOWN NOSAVE"] * 2 and not plan.nodes[0].rewrite_nodes_conf
    assert plan.nodes[0].rdb_path == "/d1/dump.rdb" and plan.nodes[0].nodes_conf_path == "/d1/nodes.conf"


def test_map_of_an_unknown_node_and_an_unplaced_target_are_refused():
    plan = plan_restore(MANIFEST, inventory(), parse_maps(["10.9.9.9:1=10.0.0.3:7000"]), {})
    assert any("is not a node of backup b1" in r for r in plan.refusals)
    plan = plan_restore(MANIFEST, inventory(), parse_maps(["10.0.0.1:6379=10.0.0.4:7000"]), {})
    assert any("10.0.0.4:7000" in r and "inventory" in r for r in plan.refusals)


def test_a_target_of_another_cluster_is_refused_unless_forced():
    other = {"10.0.0.1:6379": TargetState("10.0.0.1:6379", True, "x" * 40, dbsize=5, known_nodes=3)}
    assert any("another cluster" in r for r in plan_restore(MANIFEST, inventory(), {}, other).refusals)
    assert plan_restore(MANIFEST, inventory(), {}, other, force=True).ok


def test_a_target_older_than_the_sets_writer_is_refused_even_with_force():
    raw = doc()
    raw["shards"][0]["rdb"].update(version=12, magic="REDIS", redis_ver="8.0.2")
    manifest = parse_manifest(raw, "sets/b1")
    older = {"10.0.0.2:6379": TargetState("10.0.0.2:6379", True, "r" * 40, server="redis 7.0.15")}
    plan = plan_restore(manifest, inventory(), {}, older, force=True)
    assert plan.refusals == ("10.0.0.2:6379: runs redis 7.0.15, which cannot load RDB version 12 written by "
                             "redis 8.0.2 (it reads up to 10); restore onto redis 7.4 or newer, or upgrade the "
                             "target first",)
    newer = {"10.0.0.2:6379": TargetState("10.0.0.2:6379", True, "r" * 40, server="redis 8.0.2")}
    assert plan_restore(manifest, inventory(), {}, newer).ok
