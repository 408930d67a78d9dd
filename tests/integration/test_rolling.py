"""rolling-restart against real lab clusters: writes kept, roles restored, failures stop safely, resume works."""

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
from clusterbak.lab import cluster
from clusterbak.lab.writer import Writer, missing
from clusterbak.model.topology import parse_cluster_nodes


def client(address: str) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), decode_responses=True, socket_timeout=5)


def run_ids(handle) -> dict[str, str]:
    return {n.address: client(n.address).info("server")["run_id"] for n in handle.lab.nodes}


def roles(handle) -> dict[str, tuple]:
    """node id -> (address, role, master id) as the seed sees it."""
    topo = parse_cluster_nodes(client(handle.seed).execute_command("CLUSTER", "NODES"))
    return {n.node_id: (n.address, n.role, n.master_id, tuple(str(r) for r in n.slots)) for n in topo.nodes}


def cluster_ok_everywhere(handle) -> bool:
    return all("cluster_state:ok" in client(n.address).execute_command("CLUSTER", "INFO") for n in handle.lab.nodes)


def rolling(cli, handle, *extra, inventory=None):
    return cli.json("rolling-restart", "--seed", handle.seed, "--inventory", inventory or handle.inventory, *extra)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


@pytest.mark.slow
def test_rolling_restart_under_writes_loses_nothing_and_restores_every_master(make_lab, cli):
    handle = make_lab(keys=500)
    before_ids, before_roles = run_ids(handle), roles(handle)
    writer = Writer("127.0.0.1", handle.port, "rolling")
    writer.start()
    time.sleep(0.5)
    result, doc = rolling(cli, handle, "--yes")
    time.sleep(0.3)
    stats = writer.finish()
    assert result.exit_code == 0, doc["errors"]
    res = doc["data"]["result"]
    assert res["status"] == "ok" and res["steps_done"] == res["steps_total"] == 12
    after_ids = run_ids(handle)
    assert all(after_ids[a] != before_ids[a] for a in before_ids), "every node restarted"
    assert roles(handle) == before_roles, "every master is the same node id, with the same slots"
    assert stats.failed == [], stats.failed[:3]
    assert stats.acked > 1000
    assert missing("127.0.0.1", handle.port, writer.acked) == []
    assert cluster_ok_everywhere(handle)
    masters = [n for n in res["nodes"] if n["role_before"] == "master"]
    assert all(n["role_after"] == "master" and 0 < n["window_s"] < 2 for n in masters)
    assert all(n["downtime_s"] is not None for n in res["nodes"])
    state = json.loads(default_state_path(handle.inventory).read_text())
    assert state["finished"] and {r["status"] for r in state["records"]} == {"done"}


def test_dry_run_changes_nothing_and_lists_replicas_first(lab, cli):
    before = run_ids(lab)
    result = cli("rolling-restart", "--seed", lab.seed, "--inventory", lab.inventory, "--dry-run")
    assert result.exit_code == 0, result.output
    text = result.stdout
    replica_rows = [i for i, line in enumerate(text.splitlines()) if " replicas " in line]
    master_rows = [i for i, line in enumerate(text.splitlines()) if " masters " in line]
    assert len(replica_rows) == 3 and len(master_rows) >= 9 and max(replica_rows) < min(master_rows)
    result, doc = rolling(cli, lab, "--dry-run")
    steps = doc["data"]["plan"]["steps"]
    assert [s["action"] for s in steps[:3]] == ["restart"] * 3
    assert [s["action"] for s in steps[3:6]] == ["failover", "restart", "failback"]
    masters = {n.address for n in lab.lab.nodes if n.role == "master"}
    assert {s["address"] for s in steps[:3]}.isdisjoint(masters)
    assert run_ids(lab) == before and not default_state_path(lab.inventory).exists()


def test_without_a_terminal_it_asks_for_yes_and_resume_needs_a_run(lab, cli):
    before = run_ids(lab)
    result, doc = rolling(cli, lab)
    assert result.exit_code == 3 and "--yes" in doc["errors"][0]
    result, doc = rolling(cli, lab, "--resume", "--yes")
    assert result.exit_code == 3 and "nothing to resume" in doc["errors"][0]
    assert run_ids(lab) == before and not default_state_path(lab.inventory).exists()


def test_failing_restart_command_stops_with_every_shard_served_then_resume_finishes(make_lab, cli, tmp_path):
    handle = make_lab()
    master = next(n for n in handle.lab.nodes if n.role == "master")
    good = Path(handle.inventory).read_text()
    bad = good.replace(f'[nodes."{master.address}"]',
                       f'[nodes."{master.address}"]\nrestart_command = "sh -c \'echo disk full >&2; exit 3\'"')
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(bad)
    before_roles = roles(handle)
    result, doc = rolling(cli, handle, "--yes", "--nodes", master.address, inventory=str(inventory))
    assert result.exit_code == 4, doc
    error, advice = doc["errors"]
    assert master.address in error and "disk full" in error and "exited 3" in error
    assert "--resume" in advice and "CLUSTER FAILOVER" in advice
    res = doc["data"]["result"]
    assert res["steps_done"] == 1 and all(res["serving"].values()), "every shard has a master"
    replica = next(r for r in before_roles.values() if r[2] is not None and before_roles[r[2]][0] == master.address)
    assert res["serving"]["0"] == replica[0]  # the replica took over; the old master was not touched
    assert cluster_ok_everywhere(handle)
    inventory.write_text(good)  # the operator fixes the command, then resumes
    result, doc = rolling(cli, handle, "--yes", "--resume", inventory=str(inventory))
    assert result.exit_code == 0, doc["errors"]
    assert roles(handle) == before_roles


def test_replica_that_never_resyncs_times_out_its_gate(make_lab, cli):
    handle = make_lab(masters=3, replicas=1)
    replica = next(n for n in handle.lab.nodes if n.role == "replica")
    with open(replica.conf, "a") as fh:  # after its restart it cannot authenticate to its master
        fh.write("masterauth not-the-password\n")
    masters_before = {a: i for a, i in run_ids(handle).items() if a != replica.address}
    result, doc = rolling(cli, handle, "--yes", "--nodes", replica.address, "--step-timeout", "6")
    assert result.exit_code == 4, doc
    error, advice = doc["errors"]
    assert "not passed within 6s" in error and "master_link_status:down" in error and replica.address in error
    assert "every shard still has its master" in advice
    assert {a: i for a, i in run_ids(handle).items() if a != replica.address} == masters_before
    assert cluster_ok_everywhere(handle)


def test_preflight_refuses_a_cluster_with_a_failed_node(make_lab, cli):
    handle = make_lab()
    victim = handle.lab.nodes[-1]
    os.kill(cluster.current_pid(victim), signal.SIGKILL)
    wait_for(lambda: "fail" in [n for n in parse_cluster_nodes(client(handle.seed).execute_command(
        "CLUSTER", "NODES")).nodes if n.address == victim.address][0].flags, 20, "the cluster flags the node")
    result, doc = rolling(cli, handle, "--yes")
    assert result.exit_code == 3
    assert any(victim.address in e for e in doc["errors"])
    assert not default_state_path(handle.inventory).exists()


def test_master_without_in_sync_replica_is_refused_with_the_reason(make_lab, cli):
    handle = make_lab()
    replica = next(n for n in handle.lab.nodes if n.role == "replica")
    r = client(replica.address)
    r.config_set("masterauth", "not-the-password")
    r.execute_command("CLIENT", "KILL", "TYPE", "master")
    wait_for(lambda: r.info("replication")["master_link_status"] == "down", 10, "the link goes down")
    master_id = parse_cluster_nodes(r.execute_command("CLUSTER", "NODES")).myself.master_id
    master = roles(handle)[master_id][0]
    result, doc = rolling(cli, handle, "--yes", "--nodes", master)
    assert result.exit_code == 3
    (reason,) = [e for e in doc["errors"] if "no in-sync replica" in e]
    assert master in reason and "master link is down" in reason and replica.address in reason


def test_ctrl_c_stops_after_the_current_step_then_resume_finishes(make_lab, cli):
    handle = make_lab()
    before_ids, before_roles = run_ids(handle), roles(handle)
    state_path = default_state_path(handle.inventory)
    proc = subprocess.Popen([sys.executable, "-m", "clusterbak", "rolling-restart", "--seed", handle.seed,
                             "--inventory", handle.inventory, "--yes", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def running_step() -> int | None:
            try:
                records = json.loads(state_path.read_text())["records"]
            except (OSError, ValueError):
                return None
            return next((r["index"] for r in records if r["status"] == "running" and r["index"] >= 3), None)

        interrupted_at = wait_for(running_step, 60, "the run reaches the masters")  # a CLUSTER FAILOVER step
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["data"]["result"]["status"] == "interrupted" and "--resume" in doc["errors"][1]
    state = json.loads(state_path.read_text())
    statuses = [r["status"] for r in state["records"]]
    assert statuses[interrupted_at] == "done", "the step that was running finished, gates included"
    assert "running" not in statuses and statuses.count("done") == interrupted_at + 1
    assert cluster_ok_everywhere(handle) and all(doc["data"]["result"]["serving"].values())
    result, doc = rolling(cli, handle, "--yes", "--resume")
    assert result.exit_code == 0, doc["errors"]
    assert doc["data"]["result"]["steps_done"] == 12
    after = run_ids(handle)
    assert all(after[a] != before_ids[a] for a in before_ids) and roles(handle) == before_roles


def test_local_service_commands_run_in_their_own_session():
    """A Ctrl-C at the terminal reaches clusterbak (which finishes its step), not a restart command half-way."""
    from clusterbak.transports.local import LocalTransport

    result = LocalTransport().run(f"{sys.executable} -c 'import os; print(os.getsid(0))'")
    assert int(result.stdout) != os.getsid(0)
