"""restore / drill against real lab clusters: round trips, new ports, the AOF trap, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import redis

from clusterbak.lab import cluster
from clusterbak.lab.procs import stop_pid


def digests(handle) -> dict[str, tuple[str, str, int]]:
    """node id of each master -> (DEBUG DIGEST, slots, dbsize)."""
    out = {}
    for n in handle.lab.nodes:
        c = redis.Redis(port=n.port, decode_responses=True)
        if c.info("replication")["role"] == "master":
            myid = c.execute_command("CLUSTER", "MYID")
            slots = [line for line in c.execute_command("CLUSTER", "NODES").splitlines() if "myself" in line][
                0
            ].split()[8:]
            out[myid] = (c.execute_command("DEBUG", "DIGEST"), " ".join(slots), c.dbsize())
    return out


def roles(handle) -> dict[str, str]:
    out = {}
    for n in handle.lab.nodes:
        c = redis.Redis(port=n.port, decode_responses=True)
        out[c.execute_command("CLUSTER", "MYID")] = c.info("replication")["role"]
    return out


def take_backup(cli, handle, dest):
    result, doc = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(dest),
                           "--compress", "zstd")
    assert result.exit_code == 0, doc["errors"]
    return doc["data"]["backup_id"]


def wipe(handle):
    for n in handle.lab.nodes:
        stop_pid(cluster.current_pid(n))
        for f in Path(n.dir).iterdir():
            if f.name not in ("redis.conf",):
                if f.is_dir():
                    shutil.rmtree(f)
                else:
                    f.unlink()


def test_round_trip_on_the_same_addresses_after_wiping_every_data_dir(make_lab, cli, tmp_path):
    handle = make_lab(keys=1500)
    # keys without a TTL only, so the digest cannot change by expiry between backup and restore
    for n in handle.lab.nodes:
        c = redis.Redis(port=n.port)
        if c.info("replication")["role"] == "master":
            for key in c.scan_iter(count=1000):
                c.persist(key)
    before, roles_before = digests(handle), roles(handle)
    backup_id = take_backup(cli, handle, tmp_path / "sets")
    wipe(handle)
    result, doc = cli.json(
        "restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", handle.inventory, "--yes"
    )
    assert result.exit_code == 0, doc["errors"]
    assert all(c["ok"] for c in doc["data"]["checks"])
    assert digests(handle) == before
    assert roles(handle) == roles_before


def test_dry_run_prints_the_steps_the_restore_then_runs(make_lab, cli, tmp_path):
    handle = make_lab(keys=200)
    backup_id = take_backup(cli, handle, tmp_path / "sets")
    args = ("restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", handle.inventory, "--force")
    result, dry = cli.json(*args, "--dry-run")
    assert result.exit_code == 0, dry["errors"]
    result, done = cli.json(*args, "--yes")
    assert result.exit_code == 0, done["errors"]
    assert dry["data"]["plan"]["steps"] == done["data"]["plan"]["steps"]
    assert done["data"]["steps_done"] == dry["data"]["plan"]["steps"]
    assert len(done["data"]["steps_done"]) == 6 and "place its nodes.conf and dump" in done["data"]["steps_done"][2]


def test_restore_to_new_ports_with_map(make_lab, cli, tmp_path):
    src = make_lab(keys=900)
    before = {k: v[0] for k, v in digests(src).items()}
    backup_id = take_backup(cli, src, tmp_path / "sets")
    dst = make_lab()  # a second lab on other ports: the new home
    maps = []
    for i, n in enumerate(src.lab.nodes):
        maps += ["--map", f"{n.address}={dst.lab.nodes[i].address}"]
    result, doc = cli.json("restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", dst.inventory,
                           *maps, "--yes")
    assert result.exit_code == 3 and "another cluster" in doc["errors"][0]  # dst is a live cluster: refused
    result, doc = cli.json("restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", dst.inventory,
                           *maps, "--yes", "--force")
    assert result.exit_code == 0, doc["errors"]
    assert {k: v[0] for k, v in digests(dst).items()} == before
    old_ports = {str(n.port) for n in src.lab.nodes}
    for n in dst.lab.nodes:
        text = (Path(n.dir) / f"nodes-{n.port}.conf").read_text()
        assert not any(f":{p}@" in text for p in old_ports)
        assert (Path(n.dir) / f"nodes-{n.port}.conf.before-restore-{backup_id}").exists()


def test_appendonly_target_restores_the_backup_not_its_old_aof(make_lab, cli, tmp_path):
    handle = make_lab(keys=600, extra_conf={"appendonly": "yes"})
    before = {k: v[0] for k, v in digests(handle).items()}
    backup_id = take_backup(cli, handle, tmp_path / "sets")
    c = redis.cluster.RedisCluster(host="127.0.0.1", port=handle.port)
    for i in range(200):
        c.set(f"after-backup:{i}", "x")  # lands in the AOF, must not survive the restore
    c.close()
    result, doc = cli.json(
        "restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", handle.inventory, "--yes"
    )
    assert result.exit_code == 0, doc["errors"]
    assert all(n["aof_dir"] for n in doc["data"]["plan"]["nodes"])
    assert {k: v[0] for k, v in digests(handle).items()} == before
    assert redis.Redis(port=handle.port).info("persistence")["aof_enabled"] == 1


def test_tampered_set_is_refused_before_any_node_is_stopped(lab, cli, tmp_path):
    backup_id = take_backup(cli, lab, tmp_path / "sets")
    stored = next((tmp_path / "sets" / backup_id).glob("shard-01-*"))
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))
    pids = [cluster.current_pid(n) for n in lab.lab.nodes]
    result, doc = cli.json(
        "restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", lab.inventory, "--yes"
    )
    assert result.exit_code == 4 and stored.name in doc["errors"][0]
    assert [cluster.current_pid(n) for n in lab.lab.nodes] == pids
    result, doc = cli.json("drill", backup_id, "--dest", str(tmp_path / "sets"))
    assert result.exit_code == 4


def test_missing_inventory_entry_is_a_clear_error_and_nothing_stops(lab, cli, tmp_path):
    backup_id = take_backup(cli, lab, tmp_path / "sets")
    inv = tmp_path / "inv.toml"
    text = Path(lab.inventory).read_text()
    victim = lab.lab.nodes[3].address
    inv.write_text(text.replace(f'[nodes."{victim}"]', '[nodes."127.0.0.1:1"]'))
    pids = [cluster.current_pid(n) for n in lab.lab.nodes]
    result, doc = cli.json("restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", str(inv), "--yes")
    assert result.exit_code == 3 and any(victim in e and "inventory" in e for e in doc["errors"])
    assert [cluster.current_pid(n) for n in lab.lab.nodes] == pids


def test_dry_run_and_no_confirmation_touch_nothing(lab, cli, tmp_path):
    backup_id = take_backup(cli, lab, tmp_path / "sets")
    pids = [cluster.current_pid(n) for n in lab.lab.nodes]
    result, doc = cli.json(
        "restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", lab.inventory, "--dry-run"
    )
    assert result.exit_code == 0 and len(doc["data"]["plan"]["nodes"]) == 6
    result, doc = cli.json("restore", backup_id, "--dest", str(tmp_path / "sets"), "--inventory", lab.inventory)
    assert result.exit_code == 3 and "--yes" in doc["errors"][0]
    assert [cluster.current_pid(n) for n in lab.lab.nodes] == pids


def test_drill_reports_rto_and_rpo_and_tears_down(lab, cli, tmp_path):
    backup_id = take_backup(cli, lab, tmp_path / "sets")
    result, doc = cli.json("drill", backup_id, "--dest", str(tmp_path / "sets"), "--lab-dir", str(tmp_path / "drill"))
    assert result.exit_code == 0, doc["errors"]
    rep = doc["data"]
    assert rep["ok"] and rep["rto_seconds"] > 0 and rep["rpo_seconds"] >= 0
    assert set(rep["samples"]) == {"string", "hash", "list", "set", "zset", "stream"}
    # each shard's dump read, verified and written once; its replica's is a hard link of that copy
    shards = len(json.loads((tmp_path / "sets" / backup_id / "manifest.json").read_text())["shards"])
    assert rep["placed"] == {"written": shards, "linked": len(rep["mapping"]) - shards}
    assert cluster.load(tmp_path / "drill") is None  # torn down


def _processes_mentioning(text: str) -> list[str]:
    """Command lines (and working directories) of running processes that name `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = str((proc / "cwd").resolve())
        except OSError:
            continue
        if text in cmdline or cwd.startswith(text):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_a_drill_of_a_damaged_set_fails_naming_the_file_and_leaves_nothing(lab, cli, tmp_path):
    import json

    dest = tmp_path / "sets"
    backup_id = take_backup(cli, lab, dest)
    manifest = json.loads((dest / backup_id / "manifest.json").read_text())
    victim = dest / backup_id / manifest["shards"][1]["file"]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    where = tmp_path / "drill"
    result, doc = cli.json("drill", backup_id, "--dest", str(dest), "--lab-dir", str(where))
    assert result.exit_code == 4, doc["errors"]
    assert victim.name in doc["errors"][0] and "is damaged, the drill failed" in doc["errors"][0]
    # verified while placing, not in a separate pass first (that one says "nothing was touched")
    assert "nothing was touched" not in doc["errors"][0]
    assert not where.exists() and cluster.load(where) is None
    assert _processes_mentioning(str(where)) == []


def test_a_drill_reports_its_rto_in_parts_with_no_separate_verify_pass(lab, cli, tmp_path):
    backup_id = take_backup(cli, lab, tmp_path / "sets")
    result, doc = cli.json("drill", backup_id, "--dest", str(tmp_path / "sets"))
    assert result.exit_code == 0, doc["errors"]
    parts = doc["data"]["rto_phases"]
    assert list(parts) == ["lab", "stop", "place_verify_and_load", "redis_master_ready_wait", "replicas_synced",
                           "checks"]
    assert all(v >= 0 for v in parts.values())
    assert abs(sum(parts.values()) - doc["data"]["rto_seconds"]) < 0.05
    result = cli("drill", backup_id, "--dest", str(tmp_path / "sets"))
    assert result.exit_code == 0 and "redis master ready wait" in result.output
