"""The network to a node's host breaks mid-transfer: sshd's sessions killed, then its listener too."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from clusterbak.engine import sinks
from clusterbak.lab.procs import child_pids
from clusterbak.lab.sshd import start_sshd

from .common import assert_clean, backup

MiB = 1024 * 1024


def kill_sshd(pid: int, listener_too: bool) -> None:
    """SIGKILL the sshd processes below the listener (the sessions), and the listener when asked. Only sshd's own
    processes: the remote shells are left to see their connection go (a shell killed half-way through its rc file
    can leave that host's state broken for every later login - a stale pyenv rehash lock did, once)."""
    def walk(p: int) -> list[int]:
        return [c for child in child_pids(p) for c in [child, *walk(child)]]

    victims = [p for p in walk(pid) if _is_sshd(p)] + ([pid] if listener_too else [])
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _is_sshd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().startswith(b"sshd")
    except OSError:
        return False


@pytest.fixture
def ssh_handle(make_lab):
    """A 3x1 lab reached over its own sshd, with ~6 MiB of random values in one shard (the rest small)."""
    handle = make_lab(keys=300, ssh=True)
    host, port = handle.seed.rsplit(":", 1)
    client = RedisCluster(host=host, port=int(port))
    try:
        for i in range(24):
            client.set(f"{{big}}:{i}", os.urandom(256 * 1024))
    finally:
        client.close()
    return handle


def cut_after_first_mib(monkeypatch, action) -> dict:
    """Run `action` once, when the first MiB of any dump has been streamed into the set."""
    seen = {"bytes": 0, "fired": False}
    original = sinks.VerifyingRdbSink.write

    def write(self, chunk):
        original(self, chunk)
        seen["bytes"] += len(chunk)
        if not seen["fired"] and seen["bytes"] >= MiB:
            seen["fired"] = True
            action()

    monkeypatch.setattr(sinks.VerifyingRdbSink, "write", write)
    return seen


def test_sshd_sessions_killed_mid_transfer_are_retried_into_a_fresh_file(ssh_handle, cli, tmp_path, monkeypatch):
    sshd_pid = ssh_handle.lab.sshd["pid"]
    seen = cut_after_first_mib(monkeypatch, lambda: kill_sshd(sshd_pid, listener_too=False))
    dest = tmp_path / "sets"
    result, doc = backup(cli, ssh_handle, dest)
    assert seen["fired"], doc["errors"]
    assert result.exit_code == 0, doc["errors"]
    assert cli("verify", doc["data"]["backup_id"], "--dest", str(dest)).exit_code == 0
    assert max(s["rdb"]["keys"] for s in doc["data"]["manifest"]["shards"]) >= 24
    monkeypatch.undo()
    assert_clean(cli, ssh_handle, dest)


def test_sshd_listener_killed_mid_transfer_fails_naming_host_and_path(ssh_handle, cli, tmp_path, monkeypatch):
    sshd = ssh_handle.lab.sshd
    seen = cut_after_first_mib(monkeypatch, lambda: kill_sshd(sshd["pid"], listener_too=True))
    dest = tmp_path / "sets"
    result, doc = backup(cli, ssh_handle, dest)
    assert seen["fired"], doc["errors"]
    assert result.exit_code == 4, doc["errors"]
    line = doc["errors"][0]
    assert f"127.0.0.1:{sshd['port']}" in line and ".rdb" in line, line
    assert not dest.exists() or not any(dest.iterdir())
    monkeypatch.undo()
    restarted = start_sshd(Path(ssh_handle.lab.dir) / "sshd", sshd["port"])  # same keys, same port
    try:
        assert_clean(cli, ssh_handle, dest)
        assert backup(cli, ssh_handle, dest)[0].exit_code == 0
    finally:
        restarted.stop()
