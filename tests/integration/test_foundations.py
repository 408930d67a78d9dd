"""topology / check / lab against real redis-server clusters on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import redis

from clusterbak.lab import cluster
from clusterbak.model.topology import SLOT_COUNT


def test_topology_json_lists_six_nodes_covering_every_slot_once(lab, cli):
    result, doc = cli.json("topology", "--seed", lab.seed)
    assert result.exit_code == 0 and doc["command"] == "topology" and doc["status"] == "ok"
    nodes = doc["data"]["nodes"]
    assert len(nodes) == 6
    assert sorted(n["role"] for n in nodes) == ["master"] * 3 + ["replica"] * 3
    seen = [0] * SLOT_COUNT
    for n in nodes:
        for text in n["slots"]:
            start, _, end = text.partition("-")
            for s in range(int(start), int(end or start) + 1):
                seen[s] += 1
    assert set(seen) == {1}
    shards = doc["data"]["shards"]
    assert [len(s["nodes"]) for s in shards] == [2, 2, 2]
    assert sum(n["keys"] for s in shards for n in s["nodes"] if n["role"] == "master") == 2000
    replica = shards[0]["nodes"][1]
    assert replica["lag_bytes"] is not None and replica["master_link_status"] == "up"


def test_topology_table_shows_shards(lab, cli):
    result = cli("topology", "--seed", lab.seed)
    assert result.exit_code == 0
    assert result.stdout.count("shard ") == 3 and lab.seed in result.stdout


def test_check_healthy_lab_exits_0(lab, cli):
    result, doc = cli.json("check", "--seed", lab.seed, "--inventory", lab.inventory)
    assert result.exit_code == 0, doc
    assert doc["data"]["ready"] is True
    assert not [f for f in doc["data"]["findings"] if f["severity"] == "critical"]
    assert {f["code"] for f in doc["data"]["findings"]} >= {"config"}


def test_check_after_a_master_is_killed_exits_3_and_names_it(make_lab, cli):
    handle = make_lab()
    victim = handle.lab.nodes[1]
    os.kill(cluster.current_pid(victim), 9)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the node timeout is 3 s; wait until the cluster flags it
        result, doc = cli.json("check", "--seed", handle.seed)
        crit = [f for f in doc["data"]["findings"] if f["severity"] == "critical"]
        if any(f["code"] == "node_failing" for f in crit):
            break
        time.sleep(0.5)
    assert result.exit_code == 3
    assert any(f["subject"] == victim.address for f in crit)
    human = cli("check", "--seed", handle.seed)
    assert human.exit_code == 3 and victim.address in human.stdout and "NOT READY" in human.stdout


def test_check_flags_a_relative_dir_in_the_config_file(make_lab, cli):
    handle = make_lab(masters=3, replicas=1)
    conf = handle.lab.nodes[2].conf
    conf.write_text(conf.read_text().replace(f"dir {handle.lab.nodes[2].dir}", "dir ./"))
    result, doc = cli.json("check", "--seed", handle.seed, "--inventory", handle.inventory)
    assert result.exit_code == 3
    (finding,) = [f for f in doc["data"]["findings"] if f["code"] == "dir_relative"]
    assert finding["subject"] == handle.lab.nodes[2].address and "dir ./" in finding["message"]


def test_check_reports_disabled_config_without_crashing(make_lab, cli):
    handle = make_lab(masters=3, replicas=1, extra_conf={"rename-command": "CONFIG \"\""})
    result, doc = cli.json("check", "--seed", handle.seed)
    assert result.exit_code == 0, doc
    assert {f["code"] for f in doc["data"]["findings"]} >= {"config_unavailable"}


def test_check_with_inventory_missing_a_node_is_critical(lab, cli, tmp_path):
    inv = tmp_path / "inv.toml"
    inv.write_text(f'[defaults]\ntransport = "local"\n[nodes."{lab.seed}"]\n')
    result, doc = cli.json("check", "--seed", lab.seed, "--inventory", str(inv))
    assert result.exit_code == 3
    assert any(f["code"] == "inventory_missing_node" for f in doc["data"]["findings"])


def test_unreachable_seed_exits_3_with_one_line(cli):
    result, doc = cli.json("topology", "--seed", "127.0.0.1:1", "--connect-timeout", "1")
    assert result.exit_code == 3 and doc["status"] == "refused"
    assert "cannot reach 127.0.0.1:1" in doc["errors"][0]


def test_non_cluster_node_exits_3(tmp_path, cli):
    from clusterbak.lab.procs import free_base_port, start_standalone, stop_pid

    port = free_base_port(1)
    pid = start_standalone(tmp_path, port, "requirepass s3cret\n")
    try:
        result, doc = cli.json("check", "--seed", f"127.0.0.1:{port}")
        assert result.exit_code == 3 and "authentication failed" in doc["errors"][0]
        assert "REDISCLI_AUTH" in doc["errors"][0]
        result, doc = cli.json("check", "--seed", f"127.0.0.1:{port}", env={"REDISCLI_AUTH": "s3cret"})
        assert result.exit_code == 3 and "not a Redis Cluster node" in doc["errors"][0]
        assert "s3cret" not in result.stdout
    finally:
        stop_pid(pid)


def test_bad_seed_and_bad_inventory_are_usage_errors(lab, cli, tmp_path):
    result, doc = cli.json("check", "--seed", "nonsense")
    assert result.exit_code == 2 and "HOST:PORT" in doc["errors"][0]
    inv = tmp_path / "inv.toml"
    inv.write_text('[defaults]\ntransport = "carrier-pigeon"\n')
    result, doc = cli.json("check", "--seed", lab.seed, "--inventory", str(inv))
    assert result.exit_code == 2 and "carrier-pigeon" in doc["errors"][0]


def test_console_script_and_module_entry_points(lab):
    out = subprocess.run([sys.executable, "-m", "clusterbak", "topology", "--seed", lab.seed, "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and '"command": "topology"' in out.stdout


def test_lab_status_load_and_down_stop_exactly_the_lab(tmp_path, cli):
    from tests.integration.conftest import start_lab

    handle = start_lab(tmp_path / "lab")
    pids = [cluster.current_pid(n) for n in handle.lab.nodes]
    result, doc = cli.json("lab", "status", "--dir", handle.lab.dir)
    assert result.exit_code == 0 and all(n["running"] for n in doc["data"]["nodes"])
    result, doc = cli.json("lab", "load", "--dir", handle.lab.dir, "--keys", "600")
    assert result.exit_code == 0 and doc["data"]["keys"] == 600 and doc["data"]["with_ttl"] == 60
    assert set(doc["data"]["by_kind"]) == {"string", "hash", "list", "set", "zset", "stream"}
    total = sum(redis.Redis(port=n.port).dbsize() for n in handle.lab.nodes if n.role == "master")
    assert total == 600
    result, doc = cli.json("lab", "down", "--dir", handle.lab.dir)
    assert result.exit_code == 0 and len(doc["data"]["stopped"]) == 6
    from clusterbak.lab.procs import pid_alive

    assert not any(pid_alive(p) for p in pids)
    assert cli("lab", "status", "--dir", handle.lab.dir).exit_code == 3


def test_missing_redis_server_says_how_to_install_it(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server anywhere on PATH
    monkeypatch.setattr("os.path.exists", lambda p: False if str(p).startswith("/usr/bin/") else os.path.lexists(p))
    result, doc = cli.json("lab", "up", "--dir", str(tmp_path / "lab"))
    assert result.exit_code == 3 and "apt-get install" in doc["errors"][0] and "redis-server" in doc["errors"][0]
