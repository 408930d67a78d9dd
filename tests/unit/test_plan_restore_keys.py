"""The pure half of restore-keys: slots of names and globs, Redis glob matching, shard choice, version refusals."""

from __future__ import annotations

import pytest

from clusterbak.errors import UsageError
from clusterbak.model.manifest import Manifest, ShardRecord
from clusterbak.model.topology import SlotRange
from clusterbak.plan.restore_keys import (
    Selection,
    ServerVersion,
    TargetMaster,
    glob_match,
    key_slot,
    max_rdb_version,
    parse_slot_ranges,
    pattern_slot,
    payload_rdb_version,
    payload_type,
    plan_restore_keys,
    shards_to_read,
    slot_owner_table,
    uncovered_for,
)


def test_key_slot_matches_cluster_keyslot():
    assert key_slot(b"foo") == 12182  # CLUSTER KEYSLOT foo
    assert key_slot(b"123456789") == 0x31C3 & 0x3FFF  # CRC16-XMODEM check value
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers") == key_slot(b"user1000")
    assert key_slot(b"foo{}{bar}") == key_slot(b"foo{}{bar}")  # empty tag: the whole name
    assert key_slot(b"foo{}{bar}") != key_slot(b"bar")
    assert key_slot(b"foo{{bar}}zap") == key_slot(b"{bar")
    assert key_slot(b"foo{bar}{zap}") == key_slot(b"bar")


@pytest.mark.parametrize("pattern,slot", [
    (b"session:{u1}:*", key_slot(b"u1")),
    (b"{tenant}*", key_slot(b"tenant")),
    (b"a*{u1}:x", None),  # a glob before the tag: the first `{` may be elsewhere
    (b"x:{u*}:y", None),  # a glob inside the tag
    (b"x:{}:*", None),  # empty tag hashes the whole name
    (b"x:{u1:*", None),  # no closing brace
    (b"x\\{u1}*", None),  # escapes: not narrowed
    (b"session:*", None),
])
def test_pattern_slot_narrows_only_a_literal_hash_tag(pattern, slot):
    assert pattern_slot(pattern) == slot


@pytest.mark.parametrize("pattern,name,hit", [
    (b"session:*", b"session:1", True), (b"session:*", b"sessions", False), (b"*", b"", True),
    (b"h?llo", b"hello", True), (b"h?llo", b"hllo", False), (b"h[ae]llo", b"hallo", True),
    (b"h[ae]llo", b"hillo", False), (b"h[^e]llo", b"hallo", True), (b"h[^e]llo", b"hello", False),
    (b"h[a-b]llo", b"hbllo", True), (b"h[b-a]llo", b"hallo", True), (b"h\\*llo", b"h*llo", True),
    (b"h\\*llo", b"hello", False), (b"a*b*c", b"aXbYc", True), (b"a*b*c", b"aXbY", False),
    (b"{t}:*", b"{t}:x", True),
])
def test_glob_match_is_redis_stringmatch(pattern, name, hit):
    assert glob_match(pattern, name) is hit


def test_slot_ranges_parse_and_refuse():
    assert parse_slot_ranges(["0-99", "5000"]) == (SlotRange(0, 99), SlotRange(5000, 5000))
    for bad in ("9-3", "a-b", "0-16384", "-1"):
        with pytest.raises(UsageError):
            parse_slot_ranges([bad])


def test_candidate_slots_of_selections():
    assert Selection.of().candidate_slots() is None
    assert Selection.of([b"session:*"]).candidate_slots() is None
    tagged = Selection.of([b"s:{u1}:*"], [b"plain"])
    assert tagged.candidate_slots() == {key_slot(b"u1"), key_slot(b"plain")}
    ranged = Selection.of(slots=parse_slot_ranges(["10-12"]))
    assert ranged.candidate_slots() == {10, 11, 12}
    both = Selection.of([b"s:{u1}:*"], slots=parse_slot_ranges(["0-1"]))
    assert both.candidate_slots() == (frozenset() if key_slot(b"u1") > 1 else {key_slot(b"u1")})
    with pytest.raises(UsageError):
        Selection.of(types=["strnig"])


def test_selection_selects_names_globs_and_slots():
    sel = Selection.of([b"a:*"], [b"named"], parse_slot_ranges([f"{key_slot(b'a:1')}"]))
    assert sel.selects(b"a:1")
    assert not sel.selects(b"a:2") or key_slot(b"a:2") == key_slot(b"a:1")
    assert not sel.selects(b"named") or key_slot(b"named") == key_slot(b"a:1")
    assert Selection.of().selects(b"anything")
    assert Selection.of([b"x*"], [b"y"]).scans() == ((b"x*", ()),)


def _shard(i: int, slots: str, rdb_version: int = 10) -> ShardRecord:
    return ShardRecord(index=i, slots=(slots,), master_id=f"{i:040x}", master_address=f"10.0.0.{i}:6379",
                       source_id=f"{i + 9:040x}", source_address=f"10.0.1.{i}:6379", requested_at=0.0, keys=5,
                       expires=0, rdb_version=rdb_version, file=None, aof=None)


def _manifest(rdb_version: int = 10) -> Manifest:
    shards = tuple(_shard(i, r, rdb_version) for i, r in enumerate(["0-5460", "5461-10922", "10923-16383"]))
    return Manifest(backup_id="b1", kind="rdb", seed="10.0.0.0:6379", created_at_unix=0.0, nodes=(), shards=shards,
                    node_confs=(), raw_bytes=0, stored_bytes=0, keys=15, redis_versions=("7.2.4",), raw={})


MANIFEST = _manifest()


def test_shards_to_read_intersect_candidate_slots():
    assert [s.index for s in shards_to_read(MANIFEST.shards, None)] == [0, 1, 2]
    assert [s.index for s in shards_to_read(MANIFEST.shards, frozenset({5461, 16383}))] == [1, 2]
    assert shards_to_read(MANIFEST.shards, frozenset()) == []


def test_rdb_versions_of_servers():
    assert max_rdb_version(ServerVersion("redis", "6.2.14")) == 9
    assert max_rdb_version(ServerVersion("redis", "7.0.15")) == 10
    assert max_rdb_version(ServerVersion("redis", "7.2.4")) == 11
    assert max_rdb_version(ServerVersion("valkey", "8.0.1")) == 11
    assert max_rdb_version(ServerVersion("redis", "8.0.2")) == 12
    assert ServerVersion.from_info({"redis_version": "7.2.4", "server_name": "valkey",
                                    "valkey_version": "8.0.1"}) == ServerVersion("valkey", "8.0.1")
    payload = b"\x00\x03abc" + (10).to_bytes(2, "little") + b"\x00" * 8
    assert payload_rdb_version(payload) == 10 and payload_type(payload) == "string"


def _master(address, ranges, version="7.0.15", name="redis"):
    return TargetMaster(address, tuple(SlotRange(a, b) for a, b in ranges), ServerVersion(name, version), 0)


def test_plan_refuses_an_older_target_naming_both_versions():
    masters = [_master("t:1", [(0, 16383)], "6.2.14")]
    plan = plan_restore_keys(MANIFEST, Selection.of(), masters, True, ServerVersion("redis", "7.0.15"))
    assert not plan.ok
    assert (
        "Redis 6.2.14" in plan.refusals[0]
        and "RDB version 10" in plan.refusals[0]
        and "up to version 9" in plan.refusals[0]
    )


def test_plan_refuses_a_backup_the_local_server_cannot_read():
    plan = plan_restore_keys(_manifest(11), Selection.of(), [_master("t:1", [(0, 16383)])], True,
                             ServerVersion("redis", "7.0.15"))
    assert any("RDB version 11" in r and "Redis 7.0.15" in r for r in plan.refusals)


def test_plan_refuses_uncovered_target_slots_only_where_keys_go():
    masters = [_master("t:1", [(0, 9999)])]
    scratch = ServerVersion("redis", "7.0.15")
    low = Selection.of(slots=parse_slot_ranges(["0-100"]))
    assert plan_restore_keys(MANIFEST, low, masters, False, scratch).ok
    plan = plan_restore_keys(MANIFEST, Selection.of(), masters, False, scratch)
    assert any("10000-16383" in r for r in plan.refusals)
    assert uncovered_for(slot_owner_table([("t:1", masters[0].slots)]), frozenset({5})) == ()


def test_plan_reads_one_shard_for_a_hash_tag():
    plan = plan_restore_keys(MANIFEST, Selection.of([b"s:{u1}:*"]), [_master("t:1", [(0, 16383)])], True,
                             ServerVersion("redis", "7.0.15"), "replace", "drop", b"restored:")
    assert plan.ok and len(plan.shards) == 1
    assert plan.to_dict()["rename_prefix"] == "restored:"
    with pytest.raises(UsageError):
        plan_restore_keys(MANIFEST, Selection.of(), [], True, ServerVersion("redis", "7.0.15"), "merge")


def test_plan_refuses_a_scratch_server_that_cannot_deep_check_a_backup():
    """The scratch server must deep-check every value of an (untrusted) backup as it loads it, before MIGRATE/DUMP
    pass the bytes on to a live target: `sanitize-dump-payload yes`, which Redis 6.0 does not have (6.2 added it)."""
    masters = [_master("t:1", [(0, 16383)], "6.0.20")]
    old = _manifest(9)
    plan = plan_restore_keys(old, Selection.of(), masters, True, ServerVersion("redis", "6.0.20"))
    assert not plan.ok
    (why,) = plan.refusals
    assert "Redis 6.0.20" in why and "sanitize-dump-payload" in why and "6.2" in why, why
    assert plan_restore_keys(old, Selection.of(), masters, True, ServerVersion("redis", "6.2.14")).ok
    assert plan_restore_keys(MANIFEST, Selection.of(), [_master("t:1", [(0, 16383)], "8.0.1", "valkey")], True,
                             ServerVersion("valkey", "7.2.5")).ok


def _with_file(shard: ShardRecord, raw_size: int | None, stored_size: int) -> ShardRecord:
    from dataclasses import replace

    from clusterbak.model.manifest import StoredFile

    return replace(shard, file=StoredFile(f"shard-{shard.index}.rdb.zst", "0" * 64, stored_size, "zstd",
                                          raw_size=raw_size))


def _sized_manifest() -> Manifest:
    from dataclasses import replace

    sizes = [(1000, 400), (2000, 800), (None, 3000)]  # no raw_size recorded: the stored size counts
    return replace(MANIFEST, shards=tuple(_with_file(s, raw, stored)
                                          for s, (raw, stored) in zip(MANIFEST.shards, sizes, strict=True)))


def test_plan_counts_the_bytes_placed_for_the_needed_shards_only():
    scratch, masters = ServerVersion("redis", "7.0.15"), [_master("t:1", [(0, 16383)])]
    manifest = _sized_manifest()
    assert plan_restore_keys(manifest, Selection.of(), masters, True, scratch).place_bytes == 6000
    one = plan_restore_keys(manifest, Selection.of(slots=parse_slot_ranges(["6000"])), masters, True, scratch)
    assert one.place_bytes == 2000 and one.to_dict()["place_bytes"] == 2000


def test_scratch_space_refusal_names_root_bytes_and_the_option_that_moves_it():
    from clusterbak.plan.restore_keys import scratch_space_refusal

    assert scratch_space_refusal("/tmp", 6000, 6000) is None
    why = scratch_space_refusal("/tmp", 6000, 5999)
    assert why is not None
    assert "/tmp" in why and "6000" in why and "5999" in why and "--scratch-dir" in why and "TMPDIR" in why, why


def test_a_scratch_root_without_room_is_refused_before_anything_is_placed(tmp_path):
    """The engine's guard: statvfs of the scratch root against the plan's bytes; exit 3 (PreconditionError), and
    the root is left as it was."""
    import os

    from clusterbak.engine.restore_keys import check_scratch_space
    from clusterbak.errors import EXIT_PRECONDITION, PreconditionError

    plan = plan_restore_keys(_sized_manifest(), Selection.of(), [_master("t:1", [(0, 16383)])], True,
                             ServerVersion("redis", "7.0.15"))

    def fake(free_blocks: int):
        return lambda path: os.statvfs_result((4096, 4096, 10**6, free_blocks, free_blocks, 0, 0, 0, 0, 255))

    assert check_scratch_space(plan, tmp_path, fake(2)) == tmp_path  # 8192 bytes free >= 6000
    with pytest.raises(PreconditionError) as caught:
        check_scratch_space(plan, tmp_path, fake(1))  # 4096 bytes free < 6000
    assert caught.value.exit_code == EXIT_PRECONDITION
    assert str(tmp_path) in str(caught.value) and "6000" in str(caught.value) and "4096" in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PreconditionError, match="--scratch-dir"):
        check_scratch_space(plan, tmp_path / "missing")
