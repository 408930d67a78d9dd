"""The version matrix on a production-shaped fleet: one container per node, each its own host with its own sshd,
host key and data volume, the server running as the non-root redis user, reached over SSH at its own IP.

For each of Redis 6.0, 7.0, 8.0 and Valkey 8.0, 8.1 on 3 masters + 3 replicas with mixed data and TTLs:
backup over SSH (the three BGSAVEs on three hosts run at the same time) -> verify -> wipe -> restore -> every
shard's DEBUG DIGEST equals the one before the backup -> a --via sync backup (PSYNC streams, in parallel, every key,
verified) -> rolling restart under a retrying writer: 0 failed,
0 lost, every master back in its role. The versions run one fleet at a time.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from clusterbak.lab import fleet as fl
from clusterbak.lab.writer import Writer, missing
from clusterbak.redisops.bgsave import bgsave_and_wait, server_time

from .conftest_fleet import RDB_OF, digests, masters_of, node_client, start_fleet

pytestmark = [pytest.mark.docker, pytest.mark.slow]
KEYS = 3000
SAVE_DELAY_US = 600  # rdb-key-save-delay per key: each of the three saves lasts ~0.6 s, long enough to see overlap


def manifest_of(dest: Path, backup_id: str) -> dict:
    return json.loads((dest / backup_id / "manifest.json").read_text())


def backup(cli, fleet: fl.Fleet, dest: Path, *extra: str) -> dict:
    result, doc = cli.json("backup", "--seed", fleet.seed, "--inventory", fleet.inventory, "--dest", str(dest),
                           "--parallel", "3", *extra)
    assert result.exit_code == 0, doc["errors"]
    return manifest_of(dest, doc["data"]["backup_id"])


def wipe(fleet: fl.Fleet) -> None:
    for address in masters_of(fleet):
        with node_client(address) as c:
            c.flushall()
    deadline = time.monotonic() + 30
    while any(node_client(n.address).dbsize() for n in fleet.nodes):
        assert time.monotonic() < deadline, "replicas still hold keys 30 s after FLUSHALL on their masters"
        time.sleep(0.2)


def set_save_delay(fleet: fl.Fleet, micros: int) -> None:
    for node in fleet.nodes:
        with node_client(node.address) as c:
            c.config_set("rdb-key-save-delay", micros)


def round_trip(cli, fleet: fl.Fleet, tmp_path: Path, *backup_extra: str) -> dict:
    """backup -> verify -> wipe -> restore -> digests equal; returns the manifest."""
    before = digests(fleet)
    assert sum(n for _, n in before.values()) >= KEYS
    dest = tmp_path / "sets"
    manifest = backup(cli, fleet, dest, *backup_extra)
    # the snapshot holds every key the masters held before it (nothing writes meanwhile): a shard saved on a
    # replica that had not caught up would show here, before any restore
    assert sorted(s["rdb"]["keys"] for s in manifest["shards"]) == sorted(n for _, n in before.values()), \
        (manifest["shards"], before)
    result, doc = cli.json("verify", manifest["backup_id"], "--dest", str(dest))
    assert result.exit_code == 0, doc
    wipe(fleet)
    result, doc = cli.json("restore", manifest["backup_id"], "--dest", str(dest), "--inventory", fleet.inventory,
                           "--yes")
    if result.exit_code != 0:  # what a failed restore needs to be understood, printed whole
        print(json.dumps({"errors": doc["errors"], "restore": doc.get("data")}, indent=1, default=str))
        print_server_logs(fleet)
    assert result.exit_code == 0, doc["errors"]
    after = digests(fleet)
    if after != before:  # what a mismatch needs to be understood, printed whole (an assert's repr is cut short)
        print(json.dumps({"after": after, "before": before, "nodes": node_report(fleet), "restore": doc["data"],
                          "shards": [{"source": s["source"], "keys": s["rdb"]["keys"], "expires": s["rdb"]["expires"]}
                                     for s in manifest["shards"]]}, indent=1, default=str))
        print_server_logs(fleet)
    assert after == before
    return manifest


def print_server_logs(fleet: fl.Fleet) -> None:
    for n in fleet.nodes:
        log = fl.container_of(fleet, n.address).exec_run(["tail", "-n", "60", f"{fl.DATA_DIR}/server.log"])
        print(f"--- {n.address} server.log\n{log.output.decode(errors='replace')}")


def node_report(fleet: fl.Fleet) -> dict:
    """Each node's role, keys, link and uptime now: what a mismatch needs to be understood."""
    out = {}
    for n in fleet.nodes:
        with node_client(n.address) as c:
            info = {**c.info("replication"), **c.info("server"), **c.info("persistence")}
            out[n.address] = {k: info.get(k) for k in ("role", "master_host", "master_link_status", "uptime_in_seconds",
                                                       "run_id", "loading", "rdb_last_load_keys_loaded")}
            out[n.address]["dbsize"] = c.dbsize()
    return out


def rolling_under_writer(cli, fleet: fl.Fleet) -> None:
    roles = {n.address: node_client(n.address).info("replication")["role"] for n in fleet.nodes}
    writer = Writer(fleet.nodes[0].ip, fl.PORT, name="matrix", budget_s=20)
    writer.start()
    time.sleep(0.5)
    try:
        result, doc = cli.json("rolling-restart", "--seed", fleet.seed, "--inventory", fleet.inventory, "--yes",
                               "--step-timeout", "120")
    finally:
        stats = writer.finish()
    assert result.exit_code == 0, doc["errors"]
    assert stats.failed == [] and stats.acked > 100
    assert missing(fleet.nodes[0].ip, fl.PORT, writer.acked) == []
    assert {n.address: node_client(n.address).info("replication")["role"] for n in fleet.nodes} == roles


@pytest.mark.parametrize("version", list(RDB_OF))
def test_backup_restore_rolling_on_each_version(version, fleet_images, cli, tmp_path):
    with start_fleet(tmp_path / "fleet", version, fleet_images, keys=KEYS) as fleet:
        # every node is its own host with its own host key, running the server as redis
        hostkeys = Path(fleet.known_hosts).read_text().split("\n")
        assert len({line.split()[2] for line in hostkeys if line}) == len(fleet.nodes)
        assert set(fl.versions(fleet).values()) == {version.replace("-", " ") + version_suffix(fleet)}
        uid = fl.container_of(fleet, fleet.seed).exec_run(
            ["sh", "-c", "ps -o user= -C " + fl.server_binary(version)[0]]
        )
        assert uid.output.decode().split() == ["redis"]

        set_save_delay(fleet, SAVE_DELAY_US)
        manifest = round_trip(cli, fleet, tmp_path)
        saves = [s["save"] for s in manifest["shards"]]
        # the three saves on three hosts overlapped: each began before any of them ended
        assert max(s["requested_at"] for s in saves) < min(s["finished_at"] for s in saves), saves
        assert {s["rdb"]["version"] for s in manifest["shards"]} == {RDB_OF[version]}
        assert len({s["source"]["address"] for s in manifest["shards"]}) == 3

        # --via sync: the same shards streamed over PSYNC by the replicas, in parallel, every key of each shard
        synced = backup(cli, fleet, tmp_path / "synced", "--via", "sync")
        keys = sorted(s["rdb"]["keys"] for s in manifest["shards"])
        assert sorted(s["rdb"]["keys"] for s in synced["shards"]) == keys
        saves = [s["save"] for s in synced["shards"]]
        assert {s["via"] for s in saves} == {"sync"} and all(s["snapshot_offset"] >= s["caught_up_to"] for s in saves)
        assert {s["rdb_only"] for s in saves} == {version != "redis-6.0"}  # REPLCONF rdb-only came in 7.0
        assert max(s["requested_at"] for s in saves) < min(s["finished_at"] for s in saves), saves
        assert {s["rdb"]["version"] for s in synced["shards"]} == {RDB_OF[version]}
        result, doc = cli.json("verify", synced["backup_id"], "--dest", str(tmp_path / "synced"))
        assert result.exit_code == 0, doc
        for n in fleet.nodes:  # no sub-replica left attached to a source
            repl = node_client(n.address).info("replication")
            assert repl["role"] == "master" or repl["connected_slaves"] == 0, (n.address, repl)
        set_save_delay(fleet, 0)

        rolling_under_writer(cli, fleet)


def version_suffix(fleet: fl.Fleet) -> str:
    """The patch level the images carry (checked against INFO, not assumed)."""
    patch = {"redis-6.0": ".16", "redis-7.0": ".15", "valkey-8.0": ".1", "redis-8.0": ".2", "valkey-8.1": ".1"}
    return patch[fleet.nodes[0].version]


def test_redis_60_bgsave_without_rdb_saves_and_single_file_aof(fleet_images, cli, tmp_path):
    """Redis 6.0 has no rdb_saves: completion is judged by LASTSAVE moving past our request. A foreign BGSAVE
    racing ours is waited out, never taken for ours; then the single-file AOF is backed up and restored."""
    with start_fleet(tmp_path / "fleet", "redis-6.0", fleet_images, keys=KEYS) as fleet:
        replica = next(n.address for n in fleet.nodes if n.address not in masters_of(fleet))
        with node_client(replica) as c:
            assert "rdb_saves" not in c.info("persistence")
            # LASTSAVE has 1 s resolution: a save that ends in the same second as the one before it must still
            # be seen as done (it used to look like no save at all, until the timeout)
            while server_time(c) % 1 > 0.3:
                time.sleep(0.05)
            c.bgsave()
            while int(c.info("persistence")["rdb_bgsave_in_progress"]):
                time.sleep(0.01)
            quick = bgsave_and_wait(c, replica, timeout=5)
            assert quick.last_save_time > int(quick.requested_at) - 1 and not quick.waited_for_foreign_save

            c.config_set("rdb-key-save-delay", 2000)  # ~2 s per save
            foreign_started = threading.Event()

            def foreign() -> None:
                with node_client(replica) as other:
                    other.bgsave()
                    foreign_started.set()

            t = threading.Thread(target=foreign)
            t.start()
            foreign_started.wait(10)
            t.join(10)
            ours = bgsave_and_wait(c, replica, timeout=60)
            assert ours.waited_for_foreign_save
            assert ours.rdb_saves_before == -1
            # ours started after the foreign one ended, and LASTSAVE is ours
            assert c.lastsave().timestamp() >= int(ours.requested_at)
            assert ours.duration_s > 2.5  # waited out the foreign ~1 s remainder + our own ~1 s+ save
            c.config_set("rdb-key-save-delay", 0)

        for node in fleet.nodes:
            with node_client(node.address) as c:
                c.config_set("appendonly", "yes")
                c.config_rewrite()  # restarts keep it: the restore starts the nodes from their config file
        for node in fleet.nodes:
            with node_client(node.address) as c:
                deadline = time.monotonic() + 30
                while int(c.info("persistence")["aof_rewrite_in_progress"]) or \
                        int(c.info("persistence").get("aof_rewrite_scheduled", 0)):
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        manifest = round_trip(cli, fleet, tmp_path, "--aof")
        assert manifest["kind"] == "aof"
        assert all(s["aof"].get("manifest_text") is None and len(s["aof"]["files"]) == 1 for s in manifest["shards"])
