"""Faults during rolling-restart, each on a real lab (docs/faults.md, "rolling restart and restore").

Each test asserts the exit code, one line naming the node, that no statement about who serves a shard
contradicts the live cluster, the cluster healthy afterwards (after the recovery the tool states, run here),
no leftovers, and a run that then succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from clusterbak.engine.rolling_state import default_state_path
from clusterbak.lab import cluster, nodectl
from clusterbak.lab.writer import Writer, missing
from clusterbak.model.topology import parse_cluster_nodes

from .common import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def client(address: str) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), decode_responses=True, socket_timeout=5)


def roles(handle) -> dict[str, tuple]:
    topo = parse_cluster_nodes(client(handle.seed).execute_command("CLUSTER", "NODES"))
    return {n.node_id: (n.address, n.role, n.master_id) for n in topo.nodes}


def owner_of_shard(address: str, slot: int) -> str:
    """Who serves `slot` as the node at `address` sees it (the test's own read of the live cluster)."""
    topo = parse_cluster_nodes(client(address).execute_command("CLUSTER", "NODES"))
    return next(n.address for n in topo.nodes if n.is_master and any(r.start <= slot <= r.end for r in n.slots))


def healthy(handle) -> bool:
    try:
        for n in handle.lab.nodes:
            c = client(n.address)
            if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                return False
            if any(x.is_failing for x in parse_cluster_nodes(c.execute_command("CLUSTER", "NODES")).nodes):
                return False
            if c.info("replication")["role"] == "slave" and c.info("replication")["master_link_status"] != "up":
                return False
        return True
    except (redis.RedisError, OSError):
        return False


def pair(handle, shard: int = 0):
    """(master, its replica) as LabNodes for the lab's shard `shard`."""
    now = {address: (node_id, master_id) for node_id, (address, _, master_id) in roles(handle).items()}
    master = [n for n in handle.lab.nodes if n.role == "master"][shard]
    replica = next(n for n in handle.lab.nodes if now[n.address][1] == now[master.address][0])
    return master, replica


def start_run(handle, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clusterbak", "rolling-restart", "--seed", handle.seed,
                             "--inventory", handle.inventory, "--yes", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def step_status(handle, index: int) -> str | None:
    try:
        return json.loads(default_state_path(handle.inventory).read_text())["records"][index]["status"]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def step_running(handle, index: int) -> bool:
    return step_status(handle, index) == "running"


def step_done(handle, index: int) -> bool:
    return step_status(handle, index) == "done"


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, dict]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, json.loads(out)


def kill_during_step(handle, victim, index: int, *extra) -> tuple[int, dict, float]:
    """Start a run, kill -9 `victim` once step `index` is running: (exit code, JSON doc, seconds to the exit)."""
    proc = start_run(handle, *extra)
    wait_for(lambda: step_running(handle, index), 90, f"step {index + 1} starts")
    os.kill(cluster.current_pid(victim), signal.SIGKILL)
    killed_at = time.monotonic()
    code, doc = finish(proc)
    return code, doc, time.monotonic() - killed_at


def back_then_resume(cli, handle, node, before) -> None:
    """The operator's recovery: start the node, wait for a healthy cluster, --resume; it must finish cleanly."""
    start_node(node)
    wait_for(lambda: healthy(handle), 60, "the cluster is healthy with the node back")
    result, doc = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", handle.inventory, "--yes",
                           "--resume")
    assert result.exit_code == 0, doc["errors"]
    assert roles(handle) == before and healthy(handle)
    no_leftovers(handle)


def no_leftovers(handle) -> None:
    inv_dir = Path(handle.inventory).parent
    assert not [p.name for p in inv_dir.iterdir() if ".tmp-" in p.name], "no temp state files"


def serving_statements(doc) -> dict[str, str]:
    return (doc["data"].get("result") or {}).get("serving_detail") or {}


def start_node(node) -> None:
    nodectl.start(Path(node.dir), node.port)


def test_promoted_replica_paused_around_its_cluster_failover_is_waited_for_not_reported_refused(make_lab, cli):
    """D2: the replica a failover goes to is SIGSTOPped for 4 s as the run turns to that failover (the step before
    it is done), so the interlock's read and CLUSTER FAILOVER itself sit unanswered in its socket and run on
    SIGCONT. The tool waits for it instead of claiming "refused, still served by <old master>"; no write lost."""
    handle = make_lab(keys=300)
    master, replica = pair(handle)
    other_replica = pair(handle, 1)[1]
    before = roles(handle)
    writer = Writer("127.0.0.1", handle.port, "paused")
    writer.start()
    proc = start_run(handle, "--nodes", f"{other_replica.address},{master.address}")
    pid = cluster.current_pid(replica)
    try:
        wait_for(lambda: step_done(handle, 0), 60, "the replica restart before the failover is done", interval=0.003)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(4)
    finally:
        os.kill(pid, signal.SIGCONT)
    code, doc = finish(proc)
    stats = writer.finish()
    assert code == 0, doc["errors"]
    assert roles(handle) == before and healthy(handle)
    assert stats.failed == [] and missing("127.0.0.1", handle.port, writer.acked) == []
    for text in serving_statements(doc).values():  # said after the run: true of the cluster now
        assert text.startswith("served by "), text
    no_leftovers(handle)


def test_new_master_killed_during_the_failback_is_never_reported_as_serving(make_lab, cli):
    """D2: the promoted replica (master of the shard while its old master restarts) is killed when the failback
    starts. The tool stops within seconds naming it, and says nothing that makes the dead node serve."""
    handle = make_lab(keys=300)
    master, replica = pair(handle)
    before = roles(handle)
    code, doc, took = kill_during_step(handle, replica, 2, "--nodes", master.address)
    assert code == 4, doc
    error = doc["errors"][0]
    assert replica.address in error and took < 30, (error, took)
    for text in serving_statements(doc).values():
        assert not text.startswith(f"served by {replica.address}"), text
    back_then_resume(cli, handle, replica, before)  # recovery as the advice says


def test_promoted_replica_killed_in_its_failover_step_is_named_and_its_shard_stays_served(make_lab, cli):
    """The replica a failover goes to hangs as the run turns to its failover (SIGSTOP, so the step's reads wait on
    it), then dies (SIGKILL). The run stops within seconds naming it (a refused connection is a dead process, not
    a paused one), says its master serves the shard (read then: true, nothing was switched), and once the node is
    back --resume does the failover and finishes."""
    handle = make_lab(keys=300)
    master, replica = pair(handle)
    other_replica = pair(handle, 1)[1]
    before = roles(handle)
    proc = start_run(handle, "--nodes", f"{other_replica.address},{master.address}")
    pid = cluster.current_pid(replica)
    wait_for(lambda: step_done(handle, 0), 60, "the replica restart before the failover is done", interval=0.003)
    os.kill(pid, signal.SIGSTOP)
    time.sleep(1)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    code, doc = finish(proc)
    took = time.monotonic() - killed_at
    assert code == 4, doc
    error = doc["errors"][0]
    assert error.startswith(f"{replica.address} failed during step 2 (failover {replica.address})") or \
        error.startswith(f"step 2 (failover {replica.address}): not failing over to {replica.address}"), error
    assert took < 15, took
    assert owner_of_shard(handle.seed, 0) == master.address
    assert serving_statements(doc)["0"].startswith(f"served by {master.address}"), serving_statements(doc)
    back_then_resume(cli, handle, replica, before)


def test_another_master_killed_is_named_within_seconds_and_restore_roles_gives_roles_back(make_lab, cli):
    """D3: a master the run does not handle dies during a restart step. The run stops within seconds naming it
    (not after the step timeout, not blaming gossip); --resume refuses while its replica serves the shard and
    names --restore-roles; that command gives every master its recorded role; --resume then finishes."""
    handle = make_lab(keys=300)
    target, _ = pair(handle, 0)
    victim, _ = pair(handle, 2)
    before = roles(handle)
    code, doc, took = kill_during_step(handle, victim, 1, "--nodes", target.address)
    assert code == 4, doc
    error = doc["errors"][0]
    assert error.startswith(f"{victim.address} failed during step 2") and took < 20, (error, took)
    assert "gossip" not in error
    for text in serving_statements(doc).values():
        assert not text.startswith(f"served by {victim.address}"), text
    # its replica takes the shard over; then the operator brings the node back (as that replica's replica)
    wait_for(lambda: owner_of_shard(handle.seed, 16383) != victim.address, 30, "the replica takes over")
    start_node(victim)
    wait_for(lambda: healthy(handle), 60, "the cluster is healthy with the node back")
    result, doc = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", handle.inventory, "--yes",
                           "--resume")
    assert result.exit_code == 3, doc
    (refusal,) = [e for e in doc["errors"] if "--restore-roles" in e]
    assert "shard 2" in refusal and victim.address in refusal
    result, doc = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", handle.inventory, "--yes",
                           "--restore-roles", "--step-timeout", "30")
    assert result.exit_code == 0, doc["errors"]
    assert owner_of_shard(handle.seed, 16383) == victim.address
    assert {k: v[:2] for k, v in roles(handle).items()} == {k: v[:2] for k, v in before.items()}
    result, doc = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", handle.inventory, "--yes",
                           "--resume")
    assert result.exit_code == 0, doc["errors"]
    assert roles(handle) == before and healthy(handle)
    no_leftovers(handle)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("times", [1, 2], ids=["once", "twice"])
def test_interrupt_during_rolling_restart(make_lab, cli, sig, times):
    """Once: the running step finishes, gates included, exit 130, --resume goes on. Twice: stops at once,
    one line naming the step and --resume; --resume re-checks that step and finishes."""
    handle = make_lab()
    master, replica = pair(handle, 1)
    before = roles(handle)
    if times == 2:  # a restart that takes 2 s, so both signals surely come while it runs
        inventory = Path(handle.inventory)
        text = inventory.read_text()
        assert text.count('restart_command = "') == 1
        inventory.write_text(text.replace('restart_command = "', 'restart_command = "sleep 2 && '))
    proc = start_run(handle, "--nodes", master.address)
    wait_for(lambda: step_running(handle, 1), 90, "the restart of the old master starts")
    proc.send_signal(sig)
    if times == 2:
        time.sleep(0.3)
        proc.send_signal(sig)
    code, doc = finish(proc)
    assert code == 130, doc
    state = json.loads(default_state_path(handle.inventory).read_text())
    statuses = [r["status"] for r in state["records"]]
    if times == 1:
        assert doc["data"]["result"]["status"] == "interrupted"
        assert statuses == ["done", "done", "pending"], "the running step finished, gates included"
        advice = doc["errors"][1]
        assert "--resume" in advice and f"shard 1 is served by {replica.address}" in advice
        assert healthy(handle)
    else:
        (line,) = doc["errors"]
        assert "stopped at once" in line and master.address in line and "--resume" in line
        assert statuses[1] == "running"
    no_leftovers(handle)
    result, doc = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", handle.inventory, "--yes",
                           "--resume")
    assert result.exit_code == 0, doc["errors"]
    assert roles(handle) == before and healthy(handle)
