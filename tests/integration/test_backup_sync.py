"""backup --via sync on real labs: each replica streams a snapshot it forks for us over the replication protocol.
The set must be as good as one fetched over a transport (verified, loadable, every acknowledged write), the node
must be left as it was (no sub-replica left attached), and a node's hostile or broken answers must fail the shard
naming it, with nothing complete-looking left."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from clusterbak.errors import AccessRefused, StepFailed
from clusterbak.lab.procs import kill_child_when_forked
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.rdbsync import SnapshotStream
from clusterbak.storage.sink import iter_stored_file
from tests.integration.test_auth_tls import BACKUP_ACL
from tests.integration.test_backup import _writes_the_replica_has_not_applied, backup, load_into_standalone, rdb_saves
from tests.integration.test_restore import wipe


def replica_links(port: int) -> int:
    return int(redis.Redis(port=port).info("replication")["connected_slaves"])


def test_via_sync_sets_verify_load_and_hold_every_shard_without_touching_the_masters(lab, cli, tmp_path):
    masters = [n.port for n in lab.lab.nodes if n.role == "master"]
    before = {p: rdb_saves(p) for p in masters}
    result, doc = backup(cli, lab, tmp_path / "sets", "--via", "sync")
    assert result.exit_code == 0, doc["errors"]
    m = doc["data"]["manifest"]
    assert {p: rdb_saves(p) for p in masters} == before  # the masters never forked
    set_dir = Path(doc["data"]["path"])
    for shard in m["shards"]:
        save = shard["save"]
        assert shard["source"]["role"] == "replica" and save["via"] == "sync"
        # the node said which offset its snapshot holds: at least what the master had acknowledged
        assert save["snapshot_offset"] >= save["caught_up_to"]
        assert shard["source_repl_offset"] == save["snapshot_offset"]
        assert save["rdb_only"] is True  # Redis 7.0 knew we wanted the RDB only
        owner = redis.Redis(port=int(shard["master"]["address"].rsplit(":", 1)[1]))
        assert owner.dbsize() == shard["rdb"]["keys"] > 0
        raw = tmp_path / f"raw-{shard['index']}.rdb"
        with open(raw, "wb") as fh:
            for chunk in iter_stored_file(set_dir / shard["file"]["path"], shard["file"]["compression"]):
                fh.write(chunk)
        if shutil.which("redis-check-rdb"):
            check = subprocess.run(["redis-check-rdb", str(raw)], capture_output=True, text=True, timeout=60)
            assert check.returncode == 0 and "RDB looks OK" in check.stdout
        assert load_into_standalone(raw, tmp_path / f"standalone-{shard['index']}") == shard["rdb"]["keys"]
        # no sub-replica left attached to the source
        assert replica_links(int(shard["source"]["address"].rsplit(":", 1)[1])) == 0
    assert len(m["nodes"]) == 6  # nodes.conf still collected over the transport
    assert cli("verify", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets")).exit_code == 0


def test_via_sync_set_restores_to_the_same_digests(make_lab, cli, tmp_path):
    handle = make_lab(keys=600)
    digests = {n.port: redis.Redis(port=n.port).execute_command("DEBUG", "DIGEST")
               for n in handle.lab.nodes if n.role == "master"}
    result, doc = backup(cli, handle, tmp_path / "sets", "--via", "sync")
    assert result.exit_code == 0, doc["errors"]
    wipe(handle)
    result, out = cli.json("restore", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets"), "--inventory",
                           handle.inventory, "--yes")
    assert result.exit_code == 0, out
    after = {p: redis.Redis(port=p).execute_command("DEBUG", "DIGEST") for p in digests}
    assert after == digests


def test_via_sync_waits_for_a_replica_behind_its_master(make_lab, cli, tmp_path):
    handle = make_lab(keys=300)
    master, replica, replica_node = _writes_the_replica_has_not_applied(handle, 2500)
    want = master.dbsize()
    result, doc = backup(cli, handle, tmp_path / "sets", "--via", "sync")
    assert result.exit_code == 0, doc["errors"]
    shard = next(s for s in doc["data"]["manifest"]["shards"] if s["source"]["address"] == replica_node.address)
    assert shard["rdb"]["keys"] == want and shard["save"]["catch_up_s"] > 0.5


def test_a_snapshot_older_than_the_acknowledged_writes_is_refused(make_lab, cli, tmp_path):
    """Another replica's disk sync already saving on the source: Redis attaches us to that older save. Its offset
    is short of what the master acknowledged when the shard's turn came, so the shard fails instead of keeping it."""
    handle = make_lab(keys=300)
    master_node, replica_node = handle.lab.nodes[0], handle.lab.nodes[3]
    master = redis.Redis(port=master_node.port, decode_responses=True)
    replica = redis.Redis(port=replica_node.port, decode_responses=True)
    replica.config_set("rdb-key-save-delay", 20000)  # 20 ms per key: the other sync's save runs for seconds
    # a plain disk-based sub-replica (no capabilities announced): what an old replica or a sync tool would send
    other = socket.create_connection(("127.0.0.1", replica_node.port), timeout=5)
    other.sendall(b"PSYNC ? -1\r\n")
    try:
        deadline = time.monotonic() + 10
        while not int(replica.info("persistence")["rdb_bgsave_in_progress"]):
            assert time.monotonic() < deadline, "the other replica's sync never started saving"
            time.sleep(0.02)
        tag = next(t for t in (f"t{i}" for i in range(1000))
                   if master.execute_command("CLUSTER", "KEYSLOT", t) <= 5460)
        for i in range(50):
            master.set(f"{{{tag}}}:after:{i}", "x")
        result, doc = backup(cli, handle, tmp_path / "sets", "--via", "sync")
    finally:
        other.close()
        replica.config_set("rdb-key-save-delay", 0)
    assert result.exit_code == 4, doc
    assert replica_node.address in doc["errors"][0] and "short of" in doc["errors"][0], doc["errors"]
    assert list((tmp_path / "sets").glob("*/manifest.json")) == []


def test_the_source_save_killed_mid_sync_fails_the_shard_and_a_rerun_works(make_lab, cli, tmp_path):
    handle = make_lab(keys=300)
    replica_node = handle.lab.nodes[3]
    replica = redis.Redis(port=replica_node.port)
    replica.config_set("rdb-key-save-delay", 5000)
    killer = kill_child_when_forked(replica_node.pid)
    try:
        result, doc = backup(cli, handle, tmp_path / "sets", "--via", "sync")
    finally:
        killer.join(35)
        replica.config_set("rdb-key-save-delay", 0)
    assert result.exit_code == 4, doc
    assert replica_node.address in doc["errors"][0], doc["errors"]
    assert list((tmp_path / "sets").glob("*/manifest.json")) == []
    result, doc = backup(cli, handle, tmp_path / "sets", "--via", "sync")
    assert result.exit_code == 0, doc["errors"]


def test_a_user_without_psync_is_refused_naming_the_rights_and_one_with_them_works(make_lab, cli, tmp_path):
    users = (f"backup on >backup-pw {BACKUP_ACL}\n"
             f"user syncer on >sync-pw {BACKUP_ACL} +psync +replconf")
    handle = make_lab(keys=300, extra_conf={"user": users})
    result, out = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest",
                           str(tmp_path / "sets"), "--via", "sync", "--user", "backup",
                           env={"REDISCLI_AUTH": "backup-pw"})
    assert result.exit_code == 3, out
    assert "NOPERM" in out["errors"][0].upper() and "+psync +replconf" in out["errors"][0], out["errors"]
    assert "127.0.0.1:" in out["errors"][0]
    assert list((tmp_path / "sets").glob("*/manifest.json")) == []
    result, out = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest",
                           str(tmp_path / "sets"), "--via", "sync", "--user", "syncer",
                           env={"REDISCLI_AUTH": "sync-pw"})
    assert result.exit_code == 0, out["errors"]
    assert {s["save"]["via"] for s in out["data"]["manifest"]["shards"]} == {"sync"}


def test_aof_and_via_sync_is_a_usage_error(cli, tmp_path):
    result = cli("backup", "--seed", "127.0.0.1:1", "--inventory", str(tmp_path / "none.toml"), "--dest", str(tmp_path),
                 "--aof", "--via", "sync")
    assert result.exit_code == 2 and "--via sync" in result.output


class HostileNode:
    """A listener that answers the handshake as a node would, then what the test scripts."""

    def __init__(self, answer: bytes, close_after: bool = True) -> None:
        self.answer, self.close_after = answer, close_after
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(5)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            got = b""
            while got.count(b"PSYNC") == 0:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                got += chunk
                if b"REPLCONF" in got and b"+OK" not in got:
                    conn.sendall(b"+OK\r\n")
                    got += b"+OK"
            conn.sendall(self.answer)
            if not self.close_after:
                time.sleep(3)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


REPLY = b"+FULLRESYNC " + b"b" * 40 + b" 42\r\n"


@pytest.mark.parametrize("answer,says", [
    (b"\n" * 3 + b"+FULLRESYNC " + b"x" * 600, "longer than 512"),
    (b"+OK\r\n", "unexpected answer to PSYNC"),
    (REPLY + b"$EOF:" + b"a" * 40 + b"\r\n", "expected the snapshot's length"),
    (REPLY + b"$99999999999999999\r\n", "more than any node holds"),
    (REPLY + b"$1000\r\nREDIS0010", "closed the connection"),
    (b"-NOMASTERLINK Can't SYNC while not connected with my master\r\n", "NOMASTERLINK"),
])
def test_a_hostile_or_broken_node_is_refused_naming_it(answer, says):
    node = HostileNode(answer)
    opts = ConnectionOptions(seed=f"127.0.0.1:{node.port}", socket_timeout=2)
    try:
        with pytest.raises((StepFailed, AccessRefused, redis.RedisError)) as err:
            with SnapshotStream(opts, "127.0.0.1", node.port, timeout=5) as stream:
                stream.open()
                for _ in stream.chunks():
                    pass
    finally:
        node.close()
    assert says in str(err.value)
    if not isinstance(err.value, redis.RedisError):
        assert f"127.0.0.1:{node.port}" in str(err.value)


def test_a_node_that_goes_silent_mid_snapshot_times_out_naming_it():
    node = HostileNode(REPLY + b"$1000\r\nREDIS", close_after=False)
    opts = ConnectionOptions(seed=f"127.0.0.1:{node.port}", socket_timeout=1)
    t0 = time.monotonic()
    try:
        with pytest.raises(StepFailed) as err:
            with SnapshotStream(opts, "127.0.0.1", node.port, timeout=5) as stream:
                stream.open()
                for _ in stream.chunks():
                    pass
        waited = time.monotonic() - t0
    finally:
        node.close()
    assert f"127.0.0.1:{node.port}" in str(err.value) and "silent" in str(err.value)
    assert waited < 2.5  # the socket timeout (1 s), not the save timeout (5 s)
