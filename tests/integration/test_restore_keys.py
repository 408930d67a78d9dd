"""restore-keys against real servers: one 3x1 lab backed up once, restored into a 5-master lab and into standalone
servers (with and without a password), by glob, slot range, conflict policy; expiry; interrupts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from clusterbak.lab import cluster
from clusterbak.lab.load import load as load_keys
from clusterbak.lab.procs import free_base_port, pid_alive, start_standalone, stop_pid
from clusterbak.plan.restore_keys import key_slot
from tests.integration.conftest import Cli, start_lab

SESSIONS = 40


def cluster_client(seed: str) -> RedisCluster:
    host, port = seed.rsplit(":", 1)
    return RedisCluster(startup_nodes=[ClusterNode(host, int(port))], socket_timeout=10)


def snapshot(client) -> dict[bytes, tuple[bytes, int, bytes]]:
    """name -> (DUMP payload, PEXPIRETIME, DEBUG DIGEST-VALUE) of every key of a cluster or a standalone server."""
    out = {}
    nodes = client.get_primaries() if isinstance(client, RedisCluster) else [None]
    for node in nodes:
        conn = client.get_redis_connection(node) if node else client
        keys = list(conn.scan_iter(count=1000))
        pipe = conn.pipeline(transaction=False)
        for k in keys:
            pipe.dump(k)
            pipe.execute_command("PEXPIRETIME", k)
            pipe.execute_command("DEBUG", "DIGEST-VALUE", k)
        replies = pipe.execute()
        for i, k in enumerate(keys):
            out[k] = tuple(replies[3 * i:3 * i + 3])
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 3x1 lab with mixed types, TTLs, `session:*` keys and one key that expires ~3 s after its backup."""
    root = tmp_path_factory.mktemp("rk")
    handle = start_lab(root / "src")
    load_keys("127.0.0.1", handle.port, 600, ttl_every=5)
    c = cluster_client(handle.seed)
    for i in range(SESSIONS):
        c.hset(f"session:{i}", mapping={"user": str(i), "cart": os.urandom(16)})
    for i in range(5):
        c.set(f"tenant:{{acme}}:{i}", f"v{i}")
        c.set(f"exp:{{t}}:long{i}", "x", ex=3600)
    c.set("exp:{t}:short", "gone soon", px=3000)
    expires_at = c.execute_command("PEXPIRETIME", "exp:{t}:short") / 1000
    before = snapshot(c)
    dest = root / "sets"
    result, doc = Cli().json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(dest),
                             "--compress", "zstd")
    assert result.exit_code == 0, doc["errors"]
    assert time.time() < expires_at, "the backup took longer than the short key's TTL"
    c.close()
    yield {"handle": handle, "id": doc["data"]["backup_id"], "dest": str(dest), "before": before,
           "short_expires_at": expires_at}
    cluster.down(Path(handle.lab.dir))


@pytest.fixture
def standalone(tmp_path):
    """Factory for standalone redis-servers (optionally with a password); stopped by pid afterwards."""
    pids = []

    def make(password: str | None = None, acl: str = "", username: str | None = None) -> redis.Redis:
        workdir = tmp_path / f"standalone{len(pids)}"
        workdir.mkdir()
        port = free_base_port(1)
        extra = "enable-debug-command local\n" + (f"requirepass {password}\n" if password and not acl else "") + acl
        pids.append(start_standalone(workdir, port, extra))
        return redis.Redis(port=port, username=username, password=password)

    yield make
    for pid in pids:
        stop_pid(pid)


def cluster_check(seed: str, wait: float = 0.0) -> subprocess.CompletedProcess:
    """`redis-cli --cluster check`; with `wait`, retried (bounded) until clean: a freshly formed lab's nodes may
    take a moment to agree on every slot."""
    deadline = time.monotonic() + wait
    while True:
        check = subprocess.run(["redis-cli", "--cluster", "check", seed], capture_output=True, text=True, timeout=60)
        clean = check.returncode == 0 and "[ERR]" not in check.stdout and "[WARNING]" not in check.stdout
        if clean or time.monotonic() >= deadline:
            return check
        time.sleep(0.5)


def restore_keys(cli, source, seed, *args, env=None):
    return cli.json("restore-keys", source["id"], "--dest", source["dest"], "--seed", seed, "--yes", *args, env=env)


def addr(client: redis.Redis) -> str:
    return f"127.0.0.1:{client.connection_pool.connection_kwargs['port']}"


def wait_expired(source) -> None:
    time.sleep(max(0.0, source["short_expires_at"] - time.time() + 0.2))


def test_reshape_3_into_5_masters_every_key_same_dump_and_ttl(source, make_lab, cli):
    wait_expired(source)
    target = make_lab(masters=5, replicas=0)
    assert cluster_check(target.seed, wait=20).returncode == 0, "the fresh 5-master lab never checked clean"
    result, doc = restore_keys(cli, source, target.seed)
    assert result.exit_code == 0, doc["errors"]
    expected = {k: v for k, v in source["before"].items() if k != b"exp:{t}:short"}
    got = snapshot(cluster_client(target.seed))
    assert set(got) == set(expected)
    assert all(got[k][2] == expected[k][2] for k in expected), "a value differs (DEBUG DIGEST-VALUE)"
    # DUMP bytes too, except for hashtable sets: their member order is the table's, not the data's
    assert all(got[k][0] == expected[k][0] for k in expected if not k.startswith(b"lab:set:")), "a DUMP differs"
    assert all(abs(got[k][1] - expected[k][1]) <= 1000 for k in expected), "a TTL moved by more than a second"
    totals = doc["data"]["report"]["totals"]
    assert (totals["restored"], totals["skipped_expired"], totals["failed"]) == (len(expected), 1, 0)
    assert len(doc["data"]["report"]["masters"]) == 5
    assert {s["index"] for s in doc["data"]["report"]["shards"]} == {0, 1, 2}
    # the scratch servers wrote every batch into the target themselves (MIGRATE), none fell back
    assert doc["data"]["report"]["copy"] == {"migrate": True, "why_dump": None, "notes": []}
    assert totals["batches_migrate"] >= 5 and (totals["batches_dump"], totals["batches_fallback"]) == (0, 0)
    check = cluster_check(target.seed)
    assert check.returncode == 0 and "[ERR]" not in check.stdout and "[WARNING]" not in check.stdout, check.stdout


def test_match_brings_back_exactly_the_deleted_keys_and_leaves_new_writes(source, cli):
    handle = source["handle"]
    c = cluster_client(handle.seed)
    try:
        deleted = [k for k in source["before"] if k.startswith(b"session:")]
        for k in deleted:
            c.delete(k)
        c.hset("session:3", mapping={"user": "rewritten after the backup"})  # a live write: must survive
        c.set("session:new", "written after the backup")
        c.set("tenant:{acme}:0", "changed")  # outside the glob: untouched
        result, doc = restore_keys(cli, source, handle.seed, "--match", "session:*")
        assert result.exit_code == 0, doc["errors"]
        t = doc["data"]["report"]["totals"]
        assert (t["restored"], t["skipped_existing"], t["failed"]) == (SESSIONS - 1, 1, 0)
        for k in deleted:
            if k != b"session:3":
                assert c.dump(k) == source["before"][k][0]
        assert c.hget("session:3", "user") == b"rewritten after the backup"
        assert c.get("session:new") == b"written after the backup"
        assert c.get("tenant:{acme}:0") == b"changed"
    finally:
        c.close()


def test_dry_run_counts_and_writes_nothing(source, standalone, cli):
    target = standalone()
    target.set("tenant:{acme}:1", "live")
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--match", "tenant:{acme}:*", "--dry-run")
    assert result.exit_code == 0, doc["errors"]
    rep = doc["data"]["report"]
    assert len(doc["data"]["plan"]["shards"]) == 1, "a literal hash tag reads one shard"
    assert (rep["mode"], rep["totals"]["selected"], rep["totals"]["exist_on_target"]) == ("dry-run", 5, 1)
    assert rep["totals"]["bytes"] > 0
    assert target.dbsize() == 1 and target.get("tenant:{acme}:1") == b"live"


def test_slots_restore_one_slot_range_only(source, standalone, cli):
    target = standalone()
    slots = sorted({key_slot(k) for k in source["before"]})
    lo, hi = slots[len(slots) // 3], slots[len(slots) // 3 + 20]
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--slots", f"{lo}-{hi}")
    assert result.exit_code == 0, doc["errors"]
    expected = {k for k in source["before"] if lo <= key_slot(k) <= hi}
    assert expected and set(target.keys("*")) == expected
    assert doc["data"]["report"]["totals"]["restored"] == len(expected)


@pytest.mark.parametrize("policy", ["skip", "replace", "fail"])
def test_conflict_policies(source, standalone, cli, policy):
    target = standalone()
    target.set("tenant:{acme}:2", "live value")
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--match", "tenant:{acme}:*",
                               "--on-conflict", policy)
    if policy == "fail":
        assert result.exit_code == 3 and "already exist" in doc["errors"][0]
        assert target.dbsize() == 1 and target.get("tenant:{acme}:2") == b"live value"
        return
    assert result.exit_code == 0, doc["errors"]
    t = doc["data"]["report"]["totals"]
    assert target.dbsize() == 5
    assert t["batches_migrate"] == 1 and t["batches_dump"] == 0, t
    if policy == "skip":  # the target was asked EXISTS first; only the 4 absent keys were MIGRATEd
        assert (t["restored"], t["skipped_existing"]) == (4, 1)
        assert target.get("tenant:{acme}:2") == b"live value"
    else:
        assert (t["restored"], t["skipped_existing"]) == (5, 0)
        assert target.get("tenant:{acme}:2") == b"v2"


def test_rename_prefix_restores_beside_live_keys(source, standalone, cli):
    target = standalone()
    target.set("tenant:{acme}:2", "live value")
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--match", "tenant:{acme}:*",
                               "--rename-prefix", "restored:", "--ttl", "drop")
    assert result.exit_code == 0, doc["errors"]
    assert target.get("tenant:{acme}:2") == b"live value" and target.get("restored:tenant:{acme}:2") == b"v2"
    assert target.dbsize() == 6
    copy, t = doc["data"]["report"]["copy"], doc["data"]["report"]["totals"]
    assert not copy["migrate"] and "--rename-prefix" in copy["why_dump"]
    assert t["batches_migrate"] == 0 and t["batches_dump"] >= 1


def test_expired_since_backup_are_skipped_and_counted(source, standalone, cli):
    wait_expired(source)
    target = standalone()
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--match", "exp:*")
    assert result.exit_code == 0, doc["errors"]
    t = doc["data"]["report"]["totals"]
    assert (t["restored"], t["skipped_expired"]) == (5, 1)
    assert target.exists("exp:{t}:short") == 0 and target.exists("exp:{t}:long0") == 1
    assert 3500 * 1000 < target.pttl("exp:{t}:long0") <= 3600 * 1000


def test_target_with_a_password_from_env_and_from_inventory(source, standalone, cli, tmp_path):
    target = standalone(password="s3cret-pw")
    args = ("--standalone", "--match", "tenant:{acme}:*")
    result, doc = restore_keys(cli, source, addr(target), *args, env={"REDISCLI_AUTH": ""})
    assert result.exit_code == 3 and "authentication" in doc["errors"][0], doc["errors"]
    result, doc = restore_keys(cli, source, addr(target), *args, env={"REDISCLI_AUTH": "s3cret-pw"})
    assert result.exit_code == 0, doc["errors"]
    t = doc["data"]["report"]["totals"]  # MIGRATE ... AUTH pw: the scratch server logged in itself
    assert (t["restored"], t["batches_migrate"], t["batches_dump"]) == (5, 1, 0), t
    inventory = tmp_path / "inv.toml"
    inventory.write_text('[redis]\npassword_env = "TARGET_PW"\n')
    target.flushall()
    result, doc = restore_keys(cli, source, addr(target), *args, "--inventory", str(inventory),
                               env={"TARGET_PW": "s3cret-pw", "REDISCLI_AUTH": ""})
    assert result.exit_code == 0, doc["errors"]
    assert target.dbsize() == 5


def test_migrate_authenticates_as_the_inventory_user_and_copies_exact_values(source, standalone, cli):
    """MIGRATE ... AUTH2 user pw: the scratch server logs into an ACL target itself; values and TTLs arrive exact."""
    acl = "user default off\nuser restorer on >r3st0re ~* &* +@all\n"
    target = standalone(password="r3st0re", acl=acl, username="restorer")
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--match", "exp:*", "--match", "lab:*",
                               "--user", "restorer", env={"REDISCLI_AUTH": "r3st0re"})
    assert result.exit_code == 0, doc["errors"]
    rep = doc["data"]["report"]
    assert rep["copy"]["migrate"] and rep["totals"]["batches_migrate"] >= 1 and rep["totals"]["batches_dump"] == 0
    got = snapshot(target)
    expected = {k: v for k, v in source["before"].items()
                if (k.startswith(b"lab:") or k.startswith(b"exp:")) and k in got}
    assert set(got) == set(expected) and len(got) == rep["totals"]["restored"]
    assert all(got[k][2] == expected[k][2] for k in expected), "a value differs (DEBUG DIGEST-VALUE)"
    assert all(abs(got[k][1] - expected[k][1]) <= 1000 for k in expected), "a TTL moved by more than a second"


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_a_batch_migrate_cannot_write_is_redone_by_dump_and_reported(source, standalone, cli, policy):
    """A target user without SELECT: MIGRATE (which sends SELECT 0 first) is refused, RESTORE is not. The batch is
    copied by DUMP/RESTORE instead, later batches for that master go straight there, and the report says so."""
    wait_expired(source)
    acl = "user default off\nuser nosel on >pw ~* &* +@all -select\n"
    target = standalone(password="pw", acl=acl, username="nosel")
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--user", "nosel", "--on-conflict", policy,
                               env={"REDISCLI_AUTH": "pw"})
    assert result.exit_code == 0, doc["errors"]
    rep = doc["data"]["report"]
    t = rep["totals"]
    # MIGRATE sent its RESTOREs after the refused SELECT and they were written: the redone batch finds those keys
    # existing with the backup's values (same digest) and counts them restored, not skipped and not failed
    assert (t["restored"], t["skipped_existing"], t["failed"]) == (len(source["before"]) - 1, 0, 0), t
    assert target.dbsize() == t["restored"]
    assert t["batches_fallback"] >= 1 and t["batches_migrate"] == 0 and t["batches_dump"] >= t["batches_fallback"]
    assert rep["copy"]["migrate"] and "MIGRATE" in rep["copy"]["notes"][0] and "NOPERM" in rep["copy"]["notes"][0]
    assert rep["errors"] == []


def test_refuses_a_cluster_node_as_standalone_and_a_bad_slot_range(source, cli):
    result, doc = restore_keys(cli, source, source["handle"].seed, "--standalone")
    assert result.exit_code == 3 and "drop --standalone" in doc["errors"][0]
    result, doc = restore_keys(cli, source, source["handle"].seed, "--slots", "9-3")
    assert result.exit_code == 2 and "--slots" in doc["errors"][0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_no_scratch_server(source, standalone, tmp_path, sig):
    target = standalone()
    target.execute_command("CLIENT", "PAUSE", 20000, "WRITE")  # RESTORE blocks: the run is caught mid-write
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "clusterbak", "restore-keys", source["id"], "--dest", source["dest"],
                             "--seed", addr(target), "--standalone", "--yes", "--scratch-dir", str(scratch)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        pidfiles = []
        while time.monotonic() < deadline and not pidfiles:
            pidfiles = list(scratch.glob("clusterbak-scratch-*/shard-*/redis.pid"))
            time.sleep(0.05)
        assert pidfiles, "no scratch server appeared"
        pid = int(pidfiles[0].read_text())
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err.decode()
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid), "the scratch redis-server outlived the run"
        assert list(scratch.iterdir()) == [], "scratch files were left behind"
        assert target.dbsize() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        target.execute_command("CLIENT", "UNPAUSE")


def test_an_aof_set_is_loaded_from_its_aof_directory(make_lab, standalone, cli, tmp_path):
    handle = make_lab(keys=300, extra_conf={"appendonly": "yes"})
    before = snapshot(cluster_client(handle.seed))
    result, doc = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest",
                           str(tmp_path / "sets"), "--aof", "--relax-fsync")
    assert result.exit_code == 0, doc["errors"]
    assert doc["data"]["manifest"]["kind"] == "aof"
    target = standalone()
    result, out = cli.json("restore-keys", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets"), "--seed",
                           addr(target), "--standalone", "--yes")
    assert result.exit_code == 0, out["errors"]
    got = snapshot(target)
    assert set(got) == set(before) and all(got[k][2] == before[k][2] for k in before)
    assert out["data"]["report"]["totals"]["restored"] == len(before)


def test_keys_from_a_file_and_by_type(source, standalone, cli, tmp_path):
    target = standalone()
    names = tmp_path / "names.txt"
    names.write_bytes(b"lab:hash:1\nlab:string:0\nnot:in:the:backup\n")
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--keys-from", str(names))
    assert result.exit_code == 0, doc["errors"]
    t = doc["data"]["report"]["totals"]
    assert (t["restored"], t["missing"]) == (2, 1)
    assert set(target.keys("*")) == {b"lab:hash:1", b"lab:string:0"}
    target.flushall()
    result, doc = restore_keys(cli, source, addr(target), "--standalone", "--match", "lab:*", "--type", "stream")
    assert result.exit_code == 0, doc["errors"]
    expected = {k for k in source["before"] if k.startswith(b"lab:stream:")}
    assert expected and set(target.keys("*")) == expected


def test_without_yes_and_without_a_terminal_nothing_is_written(source, standalone, cli):
    target = standalone()
    result, doc = cli.json("restore-keys", source["id"], "--dest", source["dest"], "--seed", addr(target),
                           "--standalone", "--match", "tenant:*")
    assert result.exit_code == 3 and "not confirmed" in doc["errors"][0]
    assert target.dbsize() == 0


def rewrite_shard_rdb(source, tmp_path: Path, index: int, change) -> tuple[Path, str]:
    """A copy of the source set whose shard-`index` RDB is `change(raw RDB without its CRC64)`, with the CRC64 and
    the manifest's hashes recomputed: a set that is self-consistent and passes every file-level check.
    Returns (the copy's --dest, the rewritten shard file's path inside the set)."""
    import hashlib
    import json
    import shutil as sh

    import zstandard

    from clusterbak.rdb.verify import crc64_redis
    from clusterbak.storage.sink import iter_stored_file

    sets = tmp_path / "sets"
    sh.copytree(Path(source["dest"]) / source["id"], sets / source["id"])
    doc = json.loads((sets / source["id"] / "manifest.json").read_text())
    (shard,) = [s for s in doc["shards"] if s["index"] == index]
    stored = sets / source["id"] / shard["file"]["path"]
    raw = b"".join(iter_stored_file(stored, "zstd"))
    body = change(raw[:-8])
    crc = crc64_redis(body)
    raw = body + crc.to_bytes(8, "little")
    data = zstandard.ZstdCompressor().compress(raw)
    stored.write_bytes(data)
    shard["file"].update(sha256=hashlib.sha256(data).hexdigest(), raw_sha256=hashlib.sha256(raw).hexdigest(),
                         stored_size=len(data), raw_size=len(raw), crc64=f"{crc:016x}")
    (sets / source["id"] / "manifest.json").write_text(json.dumps(doc))
    return sets, shard["file"]["path"]


def test_a_shard_the_local_redis_cannot_read_fails_in_the_check_with_its_words(source, standalone, cli, tmp_path):
    """A dump the local redis cannot read (here: a copy of the set whose shard-0 RDB claims version 11, which
    Redis 7.0 does not read, with its CRC64 and the manifest's hashes made to match) stops the run with
    redis-check-rdb's own words before any scratch server starts (exit 4); nothing is written, no file is left."""
    def version_11(body: bytes) -> bytes:
        if not body.startswith(b"REDIS0010"):
            pytest.skip(f"this check needs a Redis 7.0 dump (RDB 10); the lab wrote {body[:9]!r}")
        return b"REDIS0011" + body[9:]

    sets, path = rewrite_shard_rdb(source, tmp_path, 0, version_11)
    target = standalone()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result, out = cli.json("restore-keys", source["id"], "--dest", str(sets), "--seed", addr(target), "--standalone",
                           "--yes", "--scratch-dir", str(scratch))
    assert result.exit_code == 4, out["errors"]
    (line,) = out["errors"]
    assert path in line and "redis-check-rdb" in line and "RDB format version 11" in line, line
    assert target.dbsize() == 0
    assert list(scratch.iterdir()) == []


def test_a_crafted_compact_value_never_reaches_the_live_target(source, make_lab, cli, tmp_path):
    """A backup set is untrusted input. Here one hash's listpack in shard 0 claims its `cart` field is 10 bytes long
    instead of 4 (the listpack's header and end byte still agree), with the RDB's CRC64 and the manifest's hashes
    recomputed, so every file-level check passes. Redis accepts such a value when it loads an RDB or RESTOREs a
    payload without deep sanitization (`sanitize-dump-payload no`, the default) and crashes on the first HGETALL of
    it. The scratch servers deep-check every value as they load: the run refuses the set with one line naming the
    shard file (exit 4, a damaged set), and the live target is up and holds none of the set's keys."""
    def crafted(body: bytes) -> bytes:
        at = body.find(b"\x84cart\x05")  # a listpack string entry of 4 bytes, then its back-length
        assert at > 0, "no raw hash listpack with a cart field in shard 0"
        return body[:at] + b"\x8acart\x05" + body[at + 6:]  # a 10-byte string that runs into the next entries

    sets, path = rewrite_shard_rdb(source, tmp_path, 0, crafted)
    target = make_lab(masters=3, replicas=0)
    live = cluster_client(target.seed)
    live.set("live:{x}", "written after the backup")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result, out = cli.json("restore-keys", source["id"], "--dest", str(sets), "--seed", target.seed, "--yes",
                           "--scratch-dir", str(scratch))
    assert result.exit_code == 4, out
    (line,) = out["errors"]
    assert "damaged" in line and path in line and "integrity check failed" in line and "\n" not in line, line
    for node in live.get_primaries():
        assert live.get_redis_connection(node).ping()
    assert [k for k in live.scan_iter(count=1000)] == [b"live:{x}"]
    assert list(scratch.iterdir()) == []


def test_a_damaged_later_shard_stops_the_run_before_any_key_is_written(source, standalone, cli, tmp_path):
    """The crafted listpack of the test above, in shard 2 this time, copied one shard after the other
    (--parallel 1): shards 0 and 1 are fine and come first. Every needed shard is placed and deep-checked
    (redis-check-rdb) before the first key is written, so the run stops there: exit 4, one line naming shard 2's
    file, the target untouched, no placed dump or scratch server left."""
    def crafted(body: bytes) -> bytes:
        at = body.find(b"\x84cart\x05")
        assert at > 0, "no raw hash listpack with a cart field in shard 2"
        return body[:at] + b"\x8acart\x05" + body[at + 6:]

    sets, path = rewrite_shard_rdb(source, tmp_path, 2, crafted)
    target = standalone()
    target.set("live", "written after the backup")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result, out = cli.json("restore-keys", source["id"], "--dest", str(sets), "--seed", addr(target), "--standalone",
                           "--yes", "--parallel", "1", "--scratch-dir", str(scratch))
    assert result.exit_code == 4, out
    (line,) = out["errors"]
    assert "damaged" in line and path in line and "shard 2" in line and "integrity check failed" in line, line
    assert "\n" not in line
    assert target.keys("*") == [b"live"], "keys of the shards before the damaged one were written"
    assert list(scratch.iterdir()) == []


def test_skip_into_a_master_empty_when_planned_still_skips_a_key_written_since(source, standalone):
    """`--on-conflict skip` asks a target master EXISTS before each MIGRATE only if it held keys when the run was
    planned (a reshape into a fresh cluster spends no CPU on it). A key written after planning is still left alone:
    MIGRATE answers BUSYKEY, the batch is redone by DUMP/RESTORE (the keys MIGRATE did write compare equal and count
    as restored), and that master is asked EXISTS from then on."""
    from clusterbak.cli.restore_keys_cmd import read_set
    from clusterbak.engine.restore_keys import prepare_restore_keys, run_restore_keys
    from clusterbak.plan.restore_keys import Selection
    from clusterbak.redisops.connect import ConnectionOptions

    wait_expired(source)
    target = standalone()
    set_dir, manifest = read_set(source["dest"], source["id"])
    opts = ConnectionOptions(addr(target))
    plan = prepare_restore_keys(manifest, Selection.of(), opts, True)
    assert plan.ok and plan.masters[0].keys == 0
    target.set("session:3", "written after the plan")
    report = run_restore_keys(plan, set_dir, manifest, opts, write=True)
    t = report["totals"]
    assert (t["restored"], t["skipped_existing"], t["failed"]) == (len(source["before"]) - 2, 1, 0), t
    assert target.get("session:3") == b"written after the plan"
    assert target.dbsize() == len(source["before"]) - 1
    assert t["batches_fallback"] == 1 and "BUSYKEY" in report["copy"]["notes"][0], report["copy"]
