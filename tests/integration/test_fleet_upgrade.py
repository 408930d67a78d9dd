"""Rolling upgrades on a fleet (one host per node): `rolling-restart --upgrade-command` recreates each node's
container from the new version's image (same data volume, IP and host key), replicas first, masters after a
CLUSTER FAILOVER to an upgraded replica, under a retrying writer: 0 failed, 0 lost, every master back in its
role, every node on the new version. Also the version rules of restore across versions on the same fleet.
"""

from __future__ import annotations

import json
import time

import pytest

from clusterbak.lab import fleet as fl
from clusterbak.lab.writer import Writer, missing

from .conftest_fleet import digests, masters_of, node_client, start_fleet

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SERVER_TEXT = {"redis-7.0": "redis 7.0.15", "redis-8.0": "redis 8.0.2", "valkey-8.1": "valkey 8.1.1"}


def roles(fleet: fl.Fleet) -> dict[str, str]:
    return {n.address: node_client(n.address).info("replication")["role"] for n in fleet.nodes}


def run_ids(fleet: fl.Fleet) -> dict[str, str]:
    return {n.address: node_client(n.address).info("server")["run_id"] for n in fleet.nodes}


def upgrade_cmd(fleet: fl.Fleet, images: dict[str, str], version: str) -> str:
    return fl.upgrade_command(fleet, version) + f" --image {images[version]}"


@pytest.mark.parametrize("target", ["redis-8.0", "valkey-8.1"])
def test_rolling_upgrade_from_redis_70(target, fleet_images, cli, tmp_path):
    with start_fleet(tmp_path / "fleet", "redis-7.0", fleet_images, keys=2000) as fleet:
        dest = tmp_path / "sets"
        at_backup = digests(fleet)
        result, doc = cli.json("backup", "--seed", fleet.seed, "--inventory", fleet.inventory, "--dest", str(dest))
        assert result.exit_code == 0, doc["errors"]
        set_70 = doc["data"]["backup_id"]
        command = upgrade_cmd(fleet, fleet_images, target)
        base = ["rolling-restart", "--seed", fleet.seed, "--inventory", fleet.inventory, "--upgrade-command", command]

        # --dry-run: the plan names the upgrade command per node and the versions now; nothing changes
        result, doc = cli.json(*base, "--dry-run")
        assert result.exit_code == 0, doc["errors"]
        restarts = [s for s in doc["data"]["plan"]["steps"] if s["action"] == "restart"]
        assert len(restarts) == 6 and all(s["command"].startswith(command.split(" --node")[0]) for s in restarts)
        assert {v["before"] for v in doc["data"]["versions"].values()} == {"redis 7.0.15"}
        assert set(fl.versions(fleet).values()) == {"redis 7.0.15"}

        # an order that would leave replicas older than their upgraded master is refused before anything runs
        a_master = masters_of(fleet)[0]
        result, doc = cli.json(*base, "--nodes", a_master, "--yes")
        assert result.exit_code == 3
        assert any(f"upgrading master {a_master} but not its replica" in e for e in doc["errors"]), doc["errors"]

        before_roles = roles(fleet)
        writer = Writer(fleet.nodes[0].ip, fl.PORT, name="upgrade", budget_s=30)
        writer.start()
        time.sleep(0.5)
        try:
            result, doc = cli.json(*base, "--yes", "--step-timeout", "180")
        finally:
            stats = writer.finish()
        assert result.exit_code == 0, doc["errors"]
        assert stats.failed == [] and stats.acked > 100, stats
        assert missing(fleet.nodes[0].ip, fl.PORT, writer.acked) == []
        assert roles(fleet) == before_roles
        versions = doc["data"]["versions"]
        assert {v["before"] for v in versions.values()} == {"redis 7.0.15"}
        assert {v["after"] for v in versions.values()} == {SERVER_TEXT[target]}
        assert set(fl.versions(fleet).values()) == {SERVER_TEXT[target]}  # read again, not from the report

        # a set written by the older server restores onto the newer one
        result, doc = cli.json("restore", set_70, "--dest", str(dest), "--inventory", fleet.inventory, "--yes")
        assert result.exit_code == 0, doc["errors"]
        assert digests(fleet) == at_backup

        if target != "redis-8.0":
            return
        # and a set written by Redis 8.0 (RDB 12) onto a node put back on Redis 7.0 is refused, nothing stopped
        result, doc = cli.json("backup", "--seed", fleet.seed, "--inventory", fleet.inventory, "--dest", str(dest))
        assert result.exit_code == 0, doc["errors"]
        set_80 = doc["data"]["backup_id"]
        manifest = json.loads((dest / set_80 / "manifest.json").read_text())
        assert {s["rdb"]["version"] for s in manifest["shards"]} == {12}
        replica = next(a for a, role in roles(fleet).items() if role == "slave")
        # a replacement host provisioned with the older version (its 8.0 dump.rdb would stop 7.0 from starting)
        assert fl.container_of(fleet, replica).exec_run(["rm", "-f", "/data/dump.rdb"]).exit_code == 0
        fl.upgrade_node(tmp_path / "fleet", replica, "redis-7.0", fleet_images["redis-7.0"])
        ids = run_ids(fleet)
        result, doc = cli.json("restore", set_80, "--dest", str(dest), "--inventory", fleet.inventory, "--yes")
        assert result.exit_code == 3, doc
        assert any(e.startswith(f"{replica}: runs redis 7.0.15, which cannot load RDB version 12 written by "
                                f"redis 8.0.2") for e in doc["errors"]), doc["errors"]
        assert run_ids(fleet) == ids  # no node was stopped
