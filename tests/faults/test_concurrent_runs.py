"""Two runs against one cluster: the run lock lets one through and names it to the other (exit 3)."""

from __future__ import annotations

import socket

import pytest
import redis

from clusterbak.redisops import runlock
from clusterbak.redisops.runlock import encode_name, lock_holders

from .common import assert_clean, backup, backup_argv, replicas, slow_saves, spawn, wait_for

AOF = {"appendonly": "yes"}


def holders(handle):
    from clusterbak.redisops.connect import ConnectionOptions

    return lock_holders(ConnectionOptions(seed=handle.seed), [n.address for n in handle.lab.nodes])


@pytest.mark.parametrize("first,second", [(("--aof",), ()), ((), ("--aof", "--relax-fsync"))],
                         ids=["aof-then-rdb", "rdb-then-aof"])
def test_a_second_backup_refuses_naming_the_first(make_lab, cli, tmp_path, first, second):
    handle = make_lab(keys=600, extra_conf=AOF)
    slow_saves(replicas(handle), 5000)  # ~1 s per shard
    dest = tmp_path / "sets"
    proc = spawn(backup_argv(handle, dest, *first))
    try:
        wait_for(lambda: [h for h in holders(handle) if h.pid == proc.pid], 20, "the first run to hold the lock")
        result, doc = backup(cli, handle, dest, *second)
        assert result.exit_code == 3, doc["errors"]
        line = doc["errors"][0]
        assert f"backup by pid {proc.pid} on {socket.gethostname()}, started " in line and "s ago" in line
        assert "wait for it to finish" in line and doc["data"] is None or "plan" not in (doc["data"] or {})
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    # released at the end (the server sees the closed connections a moment later: wait, briefly)
    wait_for(lambda: holders(handle) == [], 5, "the lock to be released")
    slow_saves(replicas(handle), 0)
    assert_clean(cli, handle, dest)
    assert backup(cli, handle, dest, *second)[0].exit_code == 0


def test_a_killed_holder_leaves_no_lock_and_a_stale_one_is_broken_only_when_asked(lab, cli, tmp_path, monkeypatch):
    dest = tmp_path / "sets"
    slow_saves(replicas(lab), 5000)
    try:
        proc = spawn(backup_argv(lab, dest))
        wait_for(lambda: [h for h in holders(lab) if h.pid == proc.pid], 20, "the run to hold the lock")
        proc.kill()  # kill -9: the kernel closes its connections, and with them the lock
        proc.communicate(timeout=30)
        assert wait_for(lambda: holders(lab) == [], 5, "the lock to go with its process")
    finally:
        slow_saves(replicas(lab), 0)
    # a wedged holder: its connection stays open but sends no heartbeat
    wedged = redis.Redis(port=lab.port)
    wedged.client_setname(encode_name("ctl-7", 4242, "rolling-restart", 1_000.0, "feedfacefeedface"))
    wedged_id = wedged.client_id()
    monkeypatch.setattr(runlock, "STALE_S", 0.5)
    wait_for(lambda: all(h.idle_s >= 1 for h in holders(lab)), 10, "the holder to go idle", 0.2)
    result, doc = backup(cli, lab, dest)
    assert result.exit_code == 3 and "rolling-restart by pid 4242 on ctl-7" in doc["errors"][0]
    assert "STALE" in doc["errors"][0] and "--break-lock" in doc["errors"][0]
    result, doc = backup(cli, lab, dest, "--break-lock")
    assert result.exit_code == 0, doc["errors"]
    assert wedged.client_id() != wedged_id  # its connection was killed (redis-py opened a new, unnamed one)
    wait_for(lambda: holders(lab) == [], 5, "the lock to be released")
    monkeypatch.setattr(runlock, "STALE_S", 30.0)
    assert_clean(cli, lab, dest)


def test_a_live_holder_is_not_broken_by_break_lock(lab, cli, tmp_path):
    live = redis.Redis(port=lab.port)
    live.client_setname(encode_name("ctl-8", 4343, "restore", 2_000.0, "cafecafecafecafe"))
    try:
        result, doc = backup(cli, lab, tmp_path / "sets", "--break-lock")
        assert result.exit_code == 3 and "restore by pid 4343 on ctl-8" in doc["errors"][0]
        assert live.ping()
    finally:
        live.close()
    assert not (tmp_path / "sets").exists()


def test_a_rolling_restart_or_a_restore_refuses_while_a_backup_runs(make_lab, cli, tmp_path):
    """The lock is per cluster, not per command: a backup and a rolling restart (or a restore) never overlap."""
    handle = make_lab(keys=600)
    dest = tmp_path / "sets"
    backup_id = backup(cli, handle, dest)[1]["data"]["backup_id"]
    slow_saves(replicas(handle), 5000)
    proc = spawn(backup_argv(handle, dest))
    try:
        wait_for(lambda: [h for h in holders(handle) if h.pid == proc.pid], 20, "the backup to hold the lock")
        result, doc = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", handle.inventory, "--yes",
                               "--state", str(tmp_path / "state.json"))
        assert result.exit_code == 3 and f"backup by pid {proc.pid}" in doc["errors"][0], doc["errors"]
        result, doc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", handle.inventory, "--yes")
        assert result.exit_code == 3 and f"backup by pid {proc.pid}" in doc["errors"][0], doc["errors"]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    slow_saves(replicas(handle), 0)
    wait_for(lambda: holders(handle) == [], 5, "the lock to be released")
    assert_clean(cli, handle, dest)
