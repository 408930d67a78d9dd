"""CLUSTER NODES parsing on outputs captured from real lab clusters (tests/unit/golden)."""

from pathlib import Path

import pytest

from clusterbak.model.topology import (
    SLOT_COUNT,
    SlotRange,
    TopologyParseError,
    compress_slots,
    parse_address,
    parse_cluster_nodes,
    parse_node_line,
)

GOLDEN = Path(__file__).parent / "golden"


def load(name: str):
    return parse_cluster_nodes((GOLDEN / name).read_text())


def covered_once(topology) -> bool:
    seen = [0] * SLOT_COUNT
    for node in topology.nodes:
        if node.is_master:
            for r in node.slots:
                for s in range(r.start, r.end + 1):
                    seen[s] += 1
    return all(count == 1 for count in seen)


def test_3x1_groups_three_shards_with_one_replica_each():
    topo = load("nodes_3x1.txt")
    assert len(topo.nodes) == 6
    assert [len(s.replicas) for s in topo.shards] == [1, 1, 1]
    assert [str(r) for s in topo.shards for r in s.slots] == ["0-5460", "5461-10921", "10922-16383"]
    assert covered_once(topo)
    assert topo.uncovered_slots() == ()
    assert topo.myself.address == "127.0.0.1:7100"
    for shard in topo.shards:
        assert all(r.master_id == shard.master.node_id for r in shard.replicas)
        assert shard.replicas[0].config_epoch == shard.master.config_epoch


def test_same_cluster_from_a_replica_has_the_same_slot_map():
    a, b = load("nodes_3x1.txt"), load("nodes_3x1_from_replica.txt")
    assert a.slot_map() == b.slot_map()
    assert b.myself.is_replica


def test_3x2_has_two_replicas_per_shard():
    topo = load("nodes_3x2.txt")
    assert len(topo.nodes) == 9
    assert [len(s.replicas) for s in topo.shards] == [2, 2, 2]
    assert covered_once(topo)


def test_failed_master_after_failover_keeps_no_slots_and_is_flagged():
    topo = load("nodes_failed_master.txt")
    failed = [n for n in topo.nodes if n.is_failing]
    assert len(failed) == 1 and "fail" in failed[0].flags and failed[0].link_state == "disconnected"
    assert failed[0].slots == ()
    assert topo.uncovered_slots() == ()  # its replica took the slots over
    assert failed[0].address == "127.0.0.1:7102"


def test_master_just_killed_is_disconnected_but_not_yet_flagged():
    topo = load("nodes_master_disconnected.txt")  # captured 1 s after kill, node timeout 3 s
    node = topo.by_address("127.0.0.1:7102")
    assert node.link_state == "disconnected" and node.slots == (SlotRange(10922, 16383),)
    assert not node.is_failing and node.ping_sent > 0


def test_pfail_master_counts_its_slots_as_unserved_only_when_fail():
    line = "e" * 40 + " 127.0.0.1:7102@17102 master,fail? - 1795462846839 1795462845329 3 disconnected 10922-16383"
    node = parse_node_line(line)
    assert node.is_failing and "fail?" in node.flags


def test_3x0_with_a_dead_master_leaves_slots_uncovered():
    topo = load("nodes_3x0_failed.txt")
    assert topo.uncovered_slots() == (SlotRange(10922, 16383),)


def test_migrating_and_importing_markers():
    src = load("nodes_migrating_from_source.txt")
    (node, slot), = src.open_slots()
    assert node.address == "127.0.0.1:7100" and slot.slot == 100 and slot.direction == "migrating"
    assert slot.peer_id.startswith("5823ed53")
    assert node.slots == (SlotRange(0, 5460),)
    dst = load("nodes_migrating_from_target.txt")
    (node, slot), = dst.open_slots()
    assert node.address == "127.0.0.1:7101" and slot.direction == "importing"


def test_hostname_announcing_node():
    topo = load("nodes_hostname.txt")
    node = topo.by_address("127.0.0.1:7101")
    assert node.hostname == "redis-b.lab" and node.cport == 17101
    assert all(n.hostname == "" for n in topo.nodes if n is not node)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("10.0.0.1:6379@16379", ("10.0.0.1", 6379, 16379, "", ())),
        ("10.0.0.1:6379@16379,", ("10.0.0.1", 6379, 16379, "", ())),
        ("10.0.0.1:6379@16379,db-1.example", ("10.0.0.1", 6379, 16379, "db-1.example", ())),
        (
            "10.0.0.1:6379@16379,,tls-port=0,shard-id=ab",
            ("10.0.0.1", 6379, 16379, "", (("tls-port", "0"), ("shard-id", "ab"))),
        ),
        ("::1:7000@17000", ("::1", 7000, 17000, "", ())),
        (":0@0", ("", 0, 0, "", ())),
    ],
)
def test_address_forms(text, expected):
    assert parse_address(text) == expected


def test_noaddr_handshake_and_nofailover_flags_parse():
    node = parse_node_line("a" * 40 + " :0@0 master,noaddr,nofailover - 1 2 0 disconnected")
    assert {"noaddr", "nofailover", "master"} <= node.flags and node.slots == ()
    node = parse_node_line("b" * 40 + " 127.0.0.1:7000@17000 handshake - 0 0 0 connected")
    assert node.role == "unknown"


@pytest.mark.parametrize("line", [
    "abc 127.0.0.1:7000@17000 master - 0 0",  # too few fields
    "abc 127.0.0.1@17000 master - 0 0 1 connected",  # no port
    "abc 127.0.0.1:7000@17000 master - 0 0 1 connected 5-x",
    "abc 127.0.0.1:7000@17000 master - 0 0 1 connected 16384",
    "abc 127.0.0.1:7000@17000 master - 0 0 1 connected [5-?-def]",
])
def test_malformed_lines_raise(line):
    with pytest.raises(TopologyParseError):
        parse_node_line(line)


def test_compress_slots():
    assert [str(r) for r in compress_slots([1, 2, 3, 7, 9, 10])] == ["1-3", "7", "9-10"]
