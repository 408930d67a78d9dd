"""AOF backups and restores on a real cluster with appendonly yes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import redis

from tests.integration.test_restore import digests, wipe

AOF = {"appendonly": "yes"}


def replicas(handle):
    return [n for n in handle.lab.nodes if n.role == "replica"]


def settings(handle) -> set[str]:
    return {redis.Redis(port=n.port, decode_responses=True).config_get("auto-aof-rewrite-percentage")
            ["auto-aof-rewrite-percentage"] for n in replicas(handle)}


def aof_backup(cli, handle, dest, *extra):
    return cli.json(
        "backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(dest), "--aof", *extra
    )


def test_aof_round_trip_restores_the_same_digests(make_lab, cli, tmp_path):
    handle = make_lab(keys=900, extra_conf=AOF)
    for n in handle.lab.nodes:  # no TTLs, so expiry cannot change a digest
        c = redis.Redis(port=n.port)
        if c.info("replication")["role"] == "master":
            for key in c.scan_iter(count=1000):
                c.persist(key)
    time.sleep(0.5)
    before = digests(handle)
    result, doc = aof_backup(cli, handle, tmp_path / "sets", "--relax-fsync")
    assert result.exit_code == 0, doc["errors"]
    m = doc["data"]["manifest"]
    assert m["kind"] == "aof" and all(s["aof"]["files"][0]["type"] == "b" for s in m["shards"])
    assert settings(handle) == {"100"}
    assert {redis.Redis(port=n.port, decode_responses=True).config_get("appendfsync")["appendfsync"]
            for n in replicas(handle)} == {"everysec"}
    assert cli("verify", m["backup_id"], "--dest", str(tmp_path / "sets")).exit_code == 0
    wipe(handle)
    result, doc = cli.json(
        "restore", m["backup_id"], "--dest", str(tmp_path / "sets"), "--inventory", handle.inventory, "--yes"
    )
    assert result.exit_code == 0, doc["errors"]
    assert all(n["from_aof"] for n in doc["data"]["plan"]["nodes"])
    assert digests(handle) == before


def test_settings_are_put_back_after_a_failed_rewrite(make_lab, cli, tmp_path):
    handle = make_lab(keys=300, extra_conf={**AOF, "enable-protected-configs": "yes"})
    victim = replicas(handle)[0]
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    redis.Redis(port=victim.port).config_set("dir", str(doomed))
    doomed.rmdir()  # the rewrite child cannot create its temp file
    result, doc = aof_backup(cli, handle, tmp_path / "sets")
    assert result.exit_code == 4 and victim.address in doc["errors"][0]
    assert settings(handle) == {"100"}
    assert not (tmp_path / "sets").exists() or not any((tmp_path / "sets").iterdir())


def test_settings_are_put_back_after_an_interrupt(make_lab, tmp_path):
    handle = make_lab(keys=600, extra_conf=AOF)
    for n in replicas(handle):  # slow rewrites: ~4 s each
        redis.Redis(port=n.port).config_set("rdb-key-save-delay", 20000)
    proc = subprocess.Popen([sys.executable, "-m", "clusterbak", "backup", "--seed", handle.seed, "--inventory",
                             handle.inventory, "--dest", str(tmp_path / "sets"), "--aof", "--relax-fsync", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and settings(handle) == {"100"}:
        time.sleep(0.05)
    assert "0" in settings(handle)  # it is running and has pinned the settings
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and json.loads(out)["errors"] == ["interrupted"]
    assert settings(handle) == {"100"}
    assert {redis.Redis(port=n.port, decode_responses=True).config_get("appendfsync")["appendfsync"]
            for n in replicas(handle)} == {"everysec"}
    assert list((tmp_path / "sets").glob("*")) == []  # the .partial set was removed, nothing looks complete


def test_replica_without_aof_is_refused_and_list_shows_kinds(lab, cli, tmp_path):
    result, doc = aof_backup(cli, lab, tmp_path / "sets", "--dry-run")
    assert result.exit_code == 3 and "appendonly is no" in doc["errors"][0]
    assert (
        cli.json("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(tmp_path / "sets"))[
            0
        ].exit_code
        == 0
    )


def test_aof_set_into_appendonly_no_target_is_refused(make_lab, cli, tmp_path):
    src = make_lab(keys=200, extra_conf=AOF)
    result, doc = aof_backup(cli, src, tmp_path / "sets")
    assert result.exit_code == 0, doc["errors"]
    dst = make_lab()
    maps = [a for i, n in enumerate(src.lab.nodes) for a in ("--map", f"{n.address}={dst.lab.nodes[i].address}")]
    result, out = cli.json("restore", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets"), "--inventory",
                           dst.inventory, *maps, "--force", "--dry-run")
    assert result.exit_code == 3 and "appendonly no" in out["errors"][0]
    assert (
        cli.json("backup", "--seed", src.seed, "--inventory", src.inventory, "--dest", str(tmp_path / "sets"))[
            0
        ].exit_code
        == 0
    )
    result, listing = cli.json("list", "--dest", str(tmp_path / "sets"))
    assert sorted(s["kind"] for s in listing["data"]["sets"]) == ["aof", "rdb"]
