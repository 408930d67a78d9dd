"""What every fault test checks afterwards, in one place: the cluster healthy, nothing pinned, nothing left."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import redis

from clusterbak.lab import cluster
from clusterbak.lab.procs import child_pids, start_server

LEFTOVER_CODES = {"temp_leftovers", "settings_pinned", "pin_record_stale", "pin_record_unreadable", "run_lock"}


def backup(cli, handle, dest, *extra):
    return cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(dest), *extra)


def backup_argv(handle, dest, *extra) -> list[str]:
    """The real CLI in its own process, for kill -9 and signals."""
    return [sys.executable, "-m", "clusterbak", "backup", "--seed", handle.seed, "--inventory", handle.inventory,
            "--dest", str(dest), "--json", *extra]


def spawn(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def replicas(handle) -> list:
    return [n for n in handle.lab.nodes if n.role == "replica"]


def client(node) -> redis.Redis:
    return redis.Redis(port=node.port, decode_responses=True, socket_timeout=10)


def config(node, key: str) -> str:
    return client(node).config_get(key)[key]


def slow_saves(nodes, usec_per_key: int) -> None:
    for node in nodes:
        client(node).config_set("rdb-key-save-delay", usec_per_key)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} within {timeout:.0f}s")


def forking(node) -> bool:
    """The node has a save or rewrite child right now."""
    pid = cluster.current_pid(node)
    return bool(pid and child_pids(pid))


@contextmanager
def in_background(work):
    """Run work(stop_event) in a thread for the body; then stop it and join it."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def restart(node) -> None:
    """Start a killed lab node again from its own config file, then wait for it to answer."""
    start_server(node.conf, node.port)


def findings(cli, handle) -> tuple[int, list[dict]]:
    result, doc = cli.json("check", "--seed", handle.seed, "--inventory", handle.inventory)
    return result.exit_code, doc["data"]["findings"] if doc["data"] else []


def wait_healthy(cli, handle, timeout: float = 60.0) -> list[dict]:
    """`check` exits 0 (the cluster is ok, every replica in sync) within the timeout; returns its findings."""
    last: list = []

    def ready():
        nonlocal last
        code, last = findings(cli, handle)
        return code == 0

    try:
        wait_for(ready, timeout, "check to pass", interval=0.5)
    except AssertionError:
        raise AssertionError(f"cluster not healthy: {[f for f in last if f['severity'] == 'critical']}") from None
    return last


def remove_flagged_temp_files(cli, handle, victim) -> list[str]:
    """The operator's step after a node was killed mid-save: `check` names its Redis temp files; delete them.
    Only the killed node may have any."""
    code, found = findings(cli, handle)
    flagged = [f for f in found if f["code"] == "temp_leftovers"]
    assert {f["subject"] for f in flagged} <= {victim.address}, flagged
    removed = []
    for path in Path(victim.dir).rglob("temp-*"):
        path.unlink()
        removed.append(str(path))
    return removed


def assert_clean(cli, handle, dest: Path, timeout: float = 60.0) -> None:
    """Healthy; no save child left running; no Redis temp files, pins, pin records or run lock; no .partial set."""
    for node in handle.lab.nodes:
        wait_for(lambda node=node: not forking(node), timeout, f"{node.address}'s save/rewrite child to end", 0.1)
    last: list = []

    def clean() -> bool:  # an orphaned child of a killed server may still be finishing its temp file: poll
        nonlocal last
        code, last = findings(cli, handle)
        return code == 0 and not [f for f in last if f["code"] in LEFTOVER_CODES]

    try:
        wait_for(clean, timeout, "check to pass with nothing left behind", interval=0.5)
    except AssertionError:
        raise AssertionError([f for f in last if f["severity"] == "critical" or f["code"] in LEFTOVER_CODES]) from None
    if Path(dest).exists():
        assert not [p.name for p in Path(dest).iterdir() if p.name.endswith(".partial")]


def complete_sets(cli, dest: Path) -> list[dict]:
    result, doc = cli.json("list", "--dest", str(dest))
    return [s for s in doc["data"]["sets"] if s["status"] == "complete"]
