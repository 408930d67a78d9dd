"""Server versions -> RDB versions, and the restore refusal onto an older server (pure)."""

from clusterbak.model.versions import ServerVersion, can_read, rdb_written, restore_version_refusal, written_by


def sv(text: str) -> ServerVersion:
    found = ServerVersion.from_text(text)
    assert found is not None
    return found


def test_rdb_version_each_server_writes():
    # what the fleet images' real dump.rdb files carry (tests/integration/test_fleet_matrix.py checks them)
    assert [rdb_written(sv(t)) for t in ("redis 6.0.16", "redis 7.0.15", "valkey 8.0.1", "redis 8.0.2",
                                         "valkey 8.1.1")] == [9, 10, 11, 12, 11]
    assert [rdb_written(sv(t)) for t in ("redis 5.0.7", "redis 6.2.14", "redis 7.2.4", "redis 7.4.1",
                                         "redis 8.6.0", "valkey 9.0.0")] == [9, 9, 11, 12, 13, 80]


def test_from_info_reads_valkeys_own_version():
    assert ServerVersion.from_info({"redis_version": "7.2.4", "server_name": "valkey",
                                    "valkey_version": "8.0.1"}).text == "valkey 8.0.1"
    assert ServerVersion.from_info({"redis_version": "6.0.16"}).text == "redis 6.0.16"
    assert ServerVersion.from_info({}) is None


def test_who_reads_what():
    assert can_read(sv("redis 8.0.2"), "REDIS", 10) and can_read(sv("valkey 8.1.1"), "REDIS", 10)
    assert not can_read(sv("redis 7.0.15"), "REDIS", 11)  # a Valkey 8 dump onto Redis 7.0
    assert not can_read(sv("valkey 8.1.1"), "REDIS", 12)  # Redis 7.4+'s format is not Valkey's
    assert not can_read(sv("redis 8.0.2"), "VALKEY", 80) and can_read(sv("valkey 9.0.0"), "VALKEY", 80)


def test_refusal_names_both_versions_and_what_would_work():
    why = restore_version_refusal("10.0.0.5:6379", 12, "redis 8.0.2", "redis 7.0.15")
    assert why == ("10.0.0.5:6379: runs redis 7.0.15, which cannot load RDB version 12 written by redis 8.0.2 "
                   "(it reads up to 10); restore onto redis 7.4 or newer, or upgrade the target first")
    assert restore_version_refusal("a:1", 12, "redis 8.0.2", "redis 8.0.2") is None  # same or newer: fine
    assert restore_version_refusal("a:1", 12, "redis 8.0.2", None) is None  # target down: not refused
    assert restore_version_refusal("a:1", None, "?", "redis 6.0.16") is None  # no RDB version recorded
    assert "restore onto valkey 9.0" in restore_version_refusal("a:1", 80, "valkey 9.0.0", "redis 8.0.2")


def test_writer_comes_from_version_shaped_aux_fields_only():
    raw = {"shards": [{"index": 0, "rdb": {"redis_ver": None, "valkey_ver": "8.1.1"}},
                      {"index": 1, "rdb": {"redis_ver": "8.0.2"}},
                      {"index": 2, "rdb": {"redis_ver": "8.0.2\x1b[31m; rm -rf"}}]}
    assert [written_by(raw, i) for i in range(4)] == ["valkey 8.1.1", "redis 8.0.2", "a newer server",
                                                      "a newer server"]
