"""Faults only a fleet can make: a node's host cut off the network, a host frozen, a host killed.

| fault                                             | expected                                                      |
| ------------------------------------------------- | ------------------------------------------------------------- |
| source host disconnected while its BGSAVE runs    | exit 4 naming the node; no set reported complete; rerun works |
| source host frozen (docker pause) during BGSAVE   | exit 4: the BGSAVE wait times out naming the node; unpause,   |
| (BGSAVE + SSH, and --via sync)                    | rerun works                                                   |
| another master's host killed during a rolling     | the run stops at a safe point (exit 4) with every shard       |
| restart                                           | served, and says how to resume                                |

The commands run as subprocesses (the real CLI) while the test acts on the containers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterbak.lab import fleet as fl

from .conftest_fleet import masters_of, node_client, start_fleet

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def clusterbak(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clusterbak", *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, dict]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, json.loads(out) if out.strip() else {"errors": [err]}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.05)


def saving(address: str, proc: subprocess.Popen | None = None) -> bool:
    if proc is not None and proc.poll() is not None:
        out, err = proc.communicate()
        raise AssertionError(f"the command ended (exit {proc.returncode}) before the fault: {out[-800:]} {err[-800:]}")
    with node_client(address) as c:
        return bool(int(c.info("persistence")["rdb_bgsave_in_progress"]))


def flagged_by_anyone(fleet: fl.Fleet, address: str) -> bool:
    for node in fleet.nodes:
        with node_client(node.address) as c:
            for line in c.execute_command("CLUSTER", "NODES").splitlines():
                fields = line.split()
                if fields[1].split("@")[0] == address and {"fail", "fail?"} & set(fields[2].split(",")):
                    return True
    return False


def complete_sets(dest: Path) -> list[str]:
    return sorted(p.parent.name for p in dest.glob("*/manifest.json"))


@pytest.fixture(scope="module")
def fleet(fleet_images, tmp_path_factory):
    with start_fleet(tmp_path_factory.mktemp("fleet") / "lab", "redis-7.0", fleet_images, keys=3000) as f:
        yield f


def replica_sources(fleet: fl.Fleet) -> list[str]:
    masters = set(masters_of(fleet))
    return [n.address for n in fleet.nodes if n.address not in masters]


def slow_saves(addresses: list[str], micros: int) -> None:
    for a in addresses:
        with node_client(a) as c:
            c.config_set("rdb-key-save-delay", micros)


def test_source_host_cut_off_the_network_fails_its_shard_and_a_rerun_works(fleet, docker_client, tmp_path):
    dest = tmp_path / "sets"
    victim = replica_sources(fleet)[0]
    container = docker_client.containers.get(fleet.node(victim).name)
    network = docker_client.networks.get(fleet.network)
    slow_saves([victim], 3000)  # ~3 s of save on ~1000 keys: the window in which the host disappears
    proc = clusterbak("backup", "--seed", fleet.seed, "--inventory", fleet.inventory, "--dest", str(dest),
                      "--timeout", "20")
    try:
        wait_for(lambda: saving(victim, proc), 30, f"{victim} BGSAVE did not start")
        network.disconnect(container)
        code, doc = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        network.connect(container, ipv4_address=fleet.node(victim).ip)
    assert code == 4, doc["errors"]
    assert victim in " ".join(doc["errors"]), doc["errors"]
    assert complete_sets(dest) == []
    wait_for(lambda: node_client(victim).ping(), 30, f"{victim} back on the network")
    slow_saves([victim], 0)
    wait_for(lambda: node_client(victim).info("replication").get("master_link_status") == "up", 30,
             f"{victim} in sync again")
    # and no node still flags it fail/fail? (gossip clears that a moment after it answers again): until then the
    # backup rightly refuses it as a source
    wait_for(lambda: not flagged_by_anyone(fleet, victim), 30, f"{victim} no longer flagged failing")
    code, doc = finish(clusterbak("backup", "--seed", fleet.seed, "--inventory", fleet.inventory, "--dest", str(dest)))
    assert code == 0, doc["errors"]
    assert len(complete_sets(dest)) == 1


@pytest.mark.parametrize("via", ["transport", "sync"])
def test_source_host_frozen_during_bgsave_times_out_naming_it_and_a_rerun_works(via, fleet, docker_client, tmp_path):
    """--via sync: the frozen node's PSYNC connection goes silent (no keep-alive newlines): the save's --timeout
    ends the wait the same way."""
    dest = tmp_path / "sets"
    victim = replica_sources(fleet)[1]
    container = docker_client.containers.get(fleet.node(victim).name)
    slow_saves([victim], 3000)
    proc = clusterbak("backup", "--seed", fleet.seed, "--inventory", fleet.inventory, "--dest", str(dest),
                      "--timeout", "6", "--via", via)
    try:
        wait_for(lambda: saving(victim, proc), 30, f"{victim} BGSAVE did not start")
        container.pause()
        code, doc = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        if docker_client.containers.get(container.name).status == "paused":
            container.unpause()
    assert code == 4, doc
    assert victim in " ".join(doc["errors"]), doc["errors"]
    assert complete_sets(dest) == []
    slow_saves([victim], 0)
    wait_for(lambda: not saving(victim), 30, f"{victim} BGSAVE finished after unpause")
    code, doc = finish(clusterbak("backup", "--seed", fleet.seed, "--inventory", fleet.inventory, "--dest", str(dest),
                                  "--via", via))
    assert code == 0, doc["errors"]
    assert len(complete_sets(dest)) == 1


def test_another_masters_host_killed_during_a_rolling_restart_stops_at_a_safe_point(fleet, docker_client, tmp_path):
    state = tmp_path / "rolling.json"
    masters = masters_of(fleet)
    victim = masters[-1]  # the plan handles replicas first: this master is not being handled yet
    proc = clusterbak("rolling-restart", "--seed", fleet.seed, "--inventory", fleet.inventory, "--yes",
                      "--state", str(state), "--step-timeout", "20")
    try:
        def first_step_done() -> bool:
            try:
                records = json.loads(state.read_text())["records"]
            except (OSError, ValueError, KeyError):
                return False
            return any(r["status"] == "done" for r in records)

        wait_for(first_step_done, 60, "the first rolling step did not finish")
        docker_client.containers.get(fleet.node(victim).name).kill()
        code, doc = finish(proc, timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert code == 4, doc
        result = doc["data"]["result"]
        assert result["status"] == "failed" and "--resume" in result["advice"], result
        # every shard is still served (the killed master's replica took over: cluster-node-timeout is 3 s)
        seed = next(a for a in masters if a != victim)

        def all_served() -> bool:
            with node_client(seed) as c:
                return c.execute_command("CLUSTER", "INFO").find("cluster_state:ok") >= 0

        wait_for(all_served, 30, "cluster_state ok after the master's host was killed")
    finally:
        docker_client.containers.get(fleet.node(victim).name).start()
        wait_for(lambda: _answers(victim), 60, f"{victim} back")


def _answers(address: str) -> bool:
    try:
        with node_client(address) as c:
            return bool(c.ping())
    except OSError:
        return False
    except Exception:  # noqa: BLE001 - still starting
        return False
