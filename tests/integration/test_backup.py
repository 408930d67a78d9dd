"""backup / list / show / verify / prune against a real lab cluster (local transport; SSH in test_backup_ssh)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from clusterbak.lab import cluster
from clusterbak.lab.procs import free_base_port, kill_child_when_forked, start_standalone, stop_pid
from clusterbak.storage.sink import iter_stored_file


def rdb_saves(port: int) -> int:
    return int(redis.Redis(port=port).info("persistence")["rdb_saves"])


def backup(cli, handle, dest, *extra):
    return cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(dest), *extra)


def load_into_standalone(rdb: Path, workdir: Path) -> int:
    """DBSIZE of a fresh standalone redis-server that loaded this RDB."""
    workdir.mkdir()
    shutil.copy(rdb, workdir / "dump.rdb")
    port = free_base_port(1)
    pid = start_standalone(workdir, port)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 30
        while client.info("persistence")["loading"] and time.monotonic() < deadline:
            time.sleep(0.05)
        return client.dbsize()
    finally:
        stop_pid(pid)


def test_backup_takes_replicas_verifies_and_loads(lab, cli, tmp_path):
    masters = [n.port for n in lab.lab.nodes if n.role == "master"]
    before = {p: rdb_saves(p) for p in masters}
    result, doc = backup(cli, lab, tmp_path / "sets")
    assert result.exit_code == 0, doc["errors"]
    m = doc["data"]["manifest"]
    assert {s["source"]["role"] for s in m["shards"]} == {"replica"}
    assert {p: rdb_saves(p) for p in masters} == before  # the masters never forked
    assert m["totals"]["keys"] == 2000 and len(m["nodes"]) == 6 and m["format"] == 1
    set_dir = Path(doc["data"]["path"])
    assert oct(set_dir.stat().st_mode & 0o777) == "0o700"
    for shard in m["shards"]:
        stored = set_dir / shard["file"]["path"]
        assert oct(stored.stat().st_mode & 0o777) == "0o600"
        raw = tmp_path / f"raw-{shard['index']}.rdb"
        with open(raw, "wb") as fh:
            for chunk in iter_stored_file(stored, shard["file"]["compression"]):
                fh.write(chunk)
        if shutil.which("redis-check-rdb"):
            check = subprocess.run(["redis-check-rdb", str(raw)], capture_output=True, text=True, timeout=60)
            assert check.returncode == 0 and "RDB looks OK" in check.stdout
        assert load_into_standalone(raw, tmp_path / f"standalone-{shard['index']}") == shard["rdb"]["keys"]
        owner = redis.Redis(
            host=shard["master"]["address"].split(":")[0], port=int(shard["master"]["address"].split(":")[1])
        )
        assert owner.dbsize() == shard["rdb"]["keys"]
    for node in m["nodes"]:
        text = (set_dir / node["nodes_conf"]["path"]).read_text()
        assert "vars currentEpoch" in text and node["id"] in text
    assert cli("verify", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets")).exit_code == 0
    result, listing = cli.json("list", "--dest", str(tmp_path / "sets"))
    assert [s["status"] for s in listing["data"]["sets"]] == ["complete"]
    result, shown = cli.json("show", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets"))
    assert shown["data"]["backup_id"] == doc["data"]["backup_id"]


def test_each_shard_records_where_its_time_went_and_the_forks_cow(lab, cli, tmp_path):
    result, doc = backup(cli, lab, tmp_path / "sets")
    assert result.exit_code == 0, doc["errors"]
    m = doc["data"]["manifest"]
    phases = {"wait_host_s", "catch_up_s", "bgsave_s", "wait_transfer_s", "connect_s", "transfer_s", "verify_s",
              "store_s", "fsync_s"}
    for s in m["shards"]:
        t = s["timings"]
        assert set(t) == phases and all(v >= 0 for v in t.values())
        assert t["bgsave_s"] > 0 and t["transfer_s"] >= t["verify_s"] + t["store_s"] + t["fsync_s"] - 0.01
        assert isinstance(s["save"]["rdb_last_cow_size"], int)
    assert set(m["timings"]) == {"shards_s", "node_files_s"}
    # the lab is one host: one BGSAVE at a time there, so all but the first shard waited for the host
    assert sum(s["timings"]["wait_host_s"] > 0 for s in m["shards"]) >= len(m["shards"]) - 1
    shown = cli("show", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets"), "--timings")
    assert shown.exit_code == 0 and "where the time went" in shown.output and "fork COW" in shown.output


def test_compress_auto_stores_random_values_raw_and_text_compressed(make_lab, cli, tmp_path):
    handle = make_lab()
    masters = sorted((n for n in handle.lab.nodes if n.role == "master"), key=lambda n: n.port)
    random_shard = masters[0]
    words = [b"alpha", b"beta", b"gamma", b'"user_id":', b"1234", b"{", b"}"]
    for node in masters:
        client = redis.Redis(port=node.port)
        owned = [
            r for r in client.execute_command("CLUSTER", "SLOTS") if r[2][1] == node.port]
        tag = next(f"t{i}" for i in range(100_000) if owned[0][0] <= key_slot(f"t{i}".encode()) <= owned[0][1])
        pipe = client.pipeline(transaction=False)
        for i in range(6000):  # ~6 MB (RDB LZF halves the text): more than the sample that decides
            value = os.urandom(1000) if node is random_shard else b" ".join(random.choices(words, k=180))[:1000]
            pipe.set(f"k:{{{tag}}}:{i}", value)
        pipe.execute()
        client.close()
    wait_replicas_synced(handle)
    result, doc = backup(cli, handle, tmp_path / "sets")  # the default is auto
    assert result.exit_code == 0, doc["errors"]
    by_master = {s["master"]["address"]: s["file"] for s in doc["data"]["manifest"]["shards"]}
    for node in masters:
        f = by_master[f"127.0.0.1:{node.port}"]
        if node is random_shard:
            assert f["compression"] == "none" and f["path"].endswith(".rdb")
            assert f["stored_size"] == f["raw_size"]
        else:
            assert f["compression"] == "zstd" and f["path"].endswith(".rdb.zst")
            assert f["stored_size"] < 0.9 * f["raw_size"] and f["raw_size"] > 1 << 20
    assert cli("verify", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets")).exit_code == 0
    result, forced = backup(cli, handle, tmp_path / "forced", "--compress", "zstd")
    assert {s["file"]["compression"] for s in forced["data"]["manifest"]["shards"]} == {"zstd"}


def wait_replicas_synced(handle, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for node in (n for n in handle.lab.nodes if n.role == "replica"):
        replica = redis.Redis(port=node.port, decode_responses=True)
        master_port = int(replica.info("replication")["master_port"])
        target = int(redis.Redis(port=master_port).info("replication")["master_repl_offset"])
        while int(replica.info("replication").get("slave_repl_offset", -1)) < target:
            assert time.monotonic() < deadline, f"replica {node.port} did not catch up"
            time.sleep(0.05)


def test_dry_run_prints_the_plan_and_changes_nothing(lab, cli, tmp_path):
    replicas = [n.port for n in lab.lab.nodes if n.role == "replica"]
    before = {p: rdb_saves(p) for p in replicas}
    result, doc = backup(cli, lab, tmp_path / "sets", "--dry-run", "--parallel", "3", "--compress", "zstd")
    assert result.exit_code == 0 and doc["data"]["dry_run"]
    assert [s["source_role"] for s in doc["data"]["plan"]["shards"]] == ["replica"] * 3
    run = doc["data"]["run"]  # every option the run would use is in the plan's output
    assert (run["parallel"], run["compress"], run["dest"]) == (3, "zstd", str(tmp_path / "sets"))
    shown = cli("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(tmp_path / "sets"),
                "--dry-run", "--parallel", "3")
    assert shown.exit_code == 0 and "3 shard(s) in flight" in shown.stdout and "compress auto" in shown.stdout
    assert {p: rdb_saves(p) for p in replicas} == before
    assert not (tmp_path / "sets").exists()


def test_flipped_byte_is_found_by_verify(lab, cli, tmp_path):
    result, doc = backup(cli, lab, tmp_path / "sets", "--compress", "none")
    assert result.exit_code == 0
    set_dir = Path(doc["data"]["path"])
    for shard in doc["data"]["manifest"]["shards"]:  # stored as it is: both hashes from the one pass, and right
        f = shard["file"]
        assert f["sha256"] == f["raw_sha256"] == hashlib.sha256((set_dir / f["path"]).read_bytes()).hexdigest()
    result, _ = cli.json("verify", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets"))
    assert result.exit_code == 0
    victim = set_dir / doc["data"]["manifest"]["shards"][1]["file"]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    result, out = cli.json("verify", doc["data"]["backup_id"], "--dest", str(tmp_path / "sets"))
    assert result.exit_code == 4 and victim.name in out["errors"][0]


def test_save_already_running_and_foreign_save_racing(lab, cli, tmp_path):
    replica = next(n for n in lab.lab.nodes if n.role == "replica")
    client = redis.Redis(port=replica.port)
    # ~1 s per save (microseconds per key): the foreign save below is still running when the backup asks for its own,
    # however quickly the backup gets there (at 200 it took ~0.1 s and was sometimes over before the backup asked)
    client.config_set("rdb-key-save-delay", 1500)
    stop = threading.Event()

    def foreign_saves():
        while not stop.is_set():
            try:
                client.bgsave()
            except redis.ResponseError:
                pass
            time.sleep(0.05)

    client.bgsave()
    racer = threading.Thread(target=foreign_saves)
    racer.start()
    try:
        result, doc = backup(cli, lab, tmp_path / "sets")
    finally:
        stop.set()
        racer.join()
        client.config_set("rdb-key-save-delay", 0)
    assert result.exit_code == 0, doc["errors"]
    shard = next(s for s in doc["data"]["manifest"]["shards"] if s["source"]["address"] == replica.address)
    assert shard["save"]["waited_for_foreign_save"] is True
    assert shard["save"]["rdb_saves_after"] > shard["save"]["rdb_saves_before"]
    assert shard["rdb"]["ctime"] >= int(shard["save"]["requested_at"]) - 1


def test_bgsave_error_fails_cleanly_without_a_complete_set(make_lab, cli, tmp_path):
    """The save child is killed (status err) while the server stays healthy. This test used to remove the
    replica's dir instead: the node then also could not rewrite its nodes.conf, and on the first cluster-state
    change - common under load, with a 3 s node timeout - Redis exits ("can't update cluster config file"), so the
    backup met a dead node and refused (exit 3) instead of failing the step (exit 4)."""
    handle = make_lab(keys=300)
    replica = next(n for n in handle.lab.nodes if n.role == "replica")
    client = redis.Redis(port=replica.port)
    client.config_set("rdb-key-save-delay", 100000)  # 0.1 s per key: the child lives long enough to be killed
    killer = kill_child_when_forked(cluster.current_pid(replica))
    inv = Path(handle.inventory)
    try:
        result, doc = backup(cli, handle, tmp_path / "sets")
    finally:
        killer.join()
        client.config_set("rdb-key-save-delay", 0)
    assert result.exit_code == 4, doc["errors"]
    assert replica.address in doc["errors"][0] and "BGSAVE failed" in doc["errors"][0]
    sets = tmp_path / "sets"
    assert not sets.exists() or not any(sets.iterdir())
    assert inv.exists()
    assert backup(cli, handle, tmp_path / "sets")[0].exit_code == 0  # the node is fine: a rerun succeeds


def test_replica_down_refuses_the_shard_and_source_auto_uses_the_master(make_lab, cli, tmp_path):
    handle = make_lab()
    replica = handle.lab.nodes[4]
    master = handle.lab.nodes[1]
    stop_pid(cluster.current_pid(replica))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result, doc = backup(cli, handle, tmp_path / "sets", "--dry-run")
        if result.exit_code == 3:
            break
        time.sleep(0.5)
    assert result.exit_code == 3
    assert any(master.address in e and replica.address in e for e in doc["errors"]), doc["errors"]
    result, doc = backup(cli, handle, tmp_path / "sets", "--source", "auto")
    assert result.exit_code == 0, doc["errors"]
    m = doc["data"]["manifest"]
    assert [s["source"]["role"] for s in m["shards"]] == ["replica", "master", "replica"]
    assert m["shards"][1]["source"]["address"] == master.address
    # D4: the down replica can't be asked for its cluster-config-file: found as nodes-<port>.conf in its data dir
    down = next(n for n in m["nodes"] if n["address"] == replica.address)
    assert len(m["nodes"]) == 6 and down["nodes_conf"]["source_path"].endswith(f"nodes-{replica.port}.conf")
    assert not m["incomplete"]
    # without that file anywhere the set is kept but marked incomplete: exit 4, `list` says why, prune won't keep it
    Path(replica.dir, f"nodes-{replica.port}.conf").rename(Path(replica.dir, "moved-away.conf"))
    result, doc = backup(cli, handle, tmp_path / "sets", "--source", "auto")
    assert result.exit_code == 4 and replica.address in doc["errors"][0] and "INCOMPLETE" in doc["errors"][0]
    result, listing = cli.json("list", "--dest", str(tmp_path / "sets"))
    rows = {s["backup_id"]: s for s in listing["data"]["sets"]}
    bad = rows[doc["data"]["backup_id"]]
    assert bad["status"] == "incomplete" and replica.address in bad["problem"]
    result, pruned = cli.json("prune", "--dest", str(tmp_path / "sets"), "--keep-last", "1", "--dry-run")
    actions = {d["backup_id"]: d["action"] for d in pruned["data"]["decisions"]}
    assert actions[doc["data"]["backup_id"]] == "keep"  # no newer good set exists yet: the only other is older
    assert list(actions.values()).count("keep") == 2


def test_source_auto_takes_the_master_when_the_replica_lags(make_lab, cli, tmp_path):
    handle = make_lab(keys=300)
    result, doc = backup(cli, handle, tmp_path / "sets", "--max-lag", "-1", "--dry-run")
    assert result.exit_code == 3 and "bytes behind" in " ".join(doc["errors"])
    result, doc = backup(cli, handle, tmp_path / "sets", "--max-lag", "-1", "--source", "auto")
    assert result.exit_code == 0, doc["errors"]
    assert {s["source"]["role"] for s in doc["data"]["manifest"]["shards"]} == {"master"}


def test_prune_keeps_newest_and_drops_stale_partials(lab, cli, tmp_path):
    dest = tmp_path / "sets"
    ids = []
    for _ in range(3):
        result, doc = backup(cli, lab, dest)
        assert result.exit_code == 0
        ids.append(doc["data"]["backup_id"])
        time.sleep(1.1)
    stale = dest / "20200101T000000Z-dead.partial"
    stale.mkdir()
    os.utime(stale, (0, 0))
    result, doc = cli.json("prune", "--dest", str(dest), "--keep-last", "1", "--dry-run")
    assert result.exit_code == 0 and len(list(dest.iterdir())) == 4
    result, doc = cli.json("prune", "--dest", str(dest), "--keep-last", "1", "--yes")
    assert result.exit_code == 0
    assert sorted(p.name for p in dest.iterdir()) == [ids[-1]]
    result, doc = cli.json("prune", "--dest", str(dest), "--keep-last", "1")
    assert result.exit_code == 0 and doc["data"]["deleted"] == []


def test_prune_without_yes_and_without_a_terminal_deletes_nothing(lab, cli, tmp_path):
    dest = tmp_path / "sets"
    for _ in range(2):
        assert backup(cli, lab, dest)[0].exit_code == 0
        time.sleep(1.1)
    result, doc = cli.json("prune", "--dest", str(dest), "--keep-last", "1")
    assert result.exit_code == 3 and len(list(dest.iterdir())) == 2


def test_bad_flags_are_usage_errors_before_any_connection(cli, tmp_path):
    for flags, needle in ((["--source", "nearest"], "--source"), (["--compress", "lz4"], "--compress"),
                          (["--relax-fsync"], "--relax-fsync")):
        result, doc = cli.json("backup", "--seed", "127.0.0.1:1", "--inventory", str(tmp_path / "x.toml"),
                               "--dest", str(tmp_path / "s"), *flags)
        assert result.exit_code == 2 and needle in doc["errors"][0]


def test_cluster_in_fail_state_is_refused_and_force_does_not_hide_a_dead_shard(make_lab, cli, tmp_path):
    handle = make_lab(masters=3, replicas=0)
    victim = handle.lab.nodes[2]
    stop_pid(cluster.current_pid(victim))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result, doc = backup(cli, handle, tmp_path / "sets", "--source", "master")
        if any("cluster_state" in e for e in doc["errors"]):
            break
        time.sleep(0.5)
    assert result.exit_code == 3 and any("cluster_state is fail" in e for e in doc["errors"])
    result, doc = backup(cli, handle, tmp_path / "sets", "--source", "master", "--force")
    assert result.exit_code == 3 and any(victim.address in e for e in doc["errors"])
    assert not (tmp_path / "sets").exists()


def _tag_on(master: redis.Redis) -> str:
    """A hash tag whose slot this master serves."""
    owned = [(int(a), int(b)) for line in master.execute_command("CLUSTER", "NODES").splitlines()
             if "myself" in line.split()[2] for a, _, b in (r.partition("-") for r in line.split()[8:])]
    return next(t for t in (f"t{i}" for i in range(1000))
                if any(a <= master.execute_command("CLUSTER", "KEYSLOT", t) <= b for a, b in owned))


def _writes_the_replica_has_not_applied(handle, pause_ms: int) -> tuple[redis.Redis, redis.Redis, object]:
    """Pause the first master's replica (WRITE mode: its link stays up, its master's stream is not applied,
    INFO and BGSAVE still answer), then write 500 keys to that master."""
    master_node, replica_node = handle.lab.nodes[0], handle.lab.nodes[3]
    master = redis.Redis(port=master_node.port, decode_responses=True)
    replica = redis.Redis(port=replica_node.port, decode_responses=True)
    assert replica.info("replication")["master_port"] == master_node.port
    replica.execute_command("CLIENT", "PAUSE", pause_ms, "WRITE")
    tag = _tag_on(master)
    pipe = master.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"{{{tag}}}:late:{i}", "x" * 100)
    pipe.execute()
    info = replica.info("replication")
    assert info["master_link_status"] == "up" and replica.dbsize() < master.dbsize()  # the lag is real
    return master, replica, replica_node


def test_a_source_replica_behind_its_master_is_waited_for_so_the_set_holds_every_acknowledged_write(
        make_lab, cli, tmp_path):
    handle = make_lab(keys=300)
    master, replica, replica_node = _writes_the_replica_has_not_applied(handle, 2500)
    want = master.dbsize()
    result, doc = backup(cli, handle, tmp_path / "sets")
    assert result.exit_code == 0, doc["errors"]
    shard = next(s for s in doc["data"]["manifest"]["shards"] if s["source"]["address"] == replica_node.address)
    assert shard["rdb"]["keys"] == want  # before: the BGSAVE ran on the paused replica and missed the 500 keys
    assert shard["save"]["catch_up_s"] > 0.5 and shard["save"]["caught_up_to"] >= shard["master_repl_offset"]


def test_a_source_replica_that_stays_behind_fails_its_shard_naming_it(make_lab, cli, tmp_path):
    handle = make_lab(keys=300)
    master, replica, replica_node = _writes_the_replica_has_not_applied(handle, 20000)
    try:
        result, doc = backup(cli, handle, tmp_path / "sets", "--catch-up-timeout", "1")
    finally:
        replica.execute_command("CLIENT", "UNPAUSE")
    assert result.exit_code == 4, doc
    assert replica_node.address in doc["errors"][0] and "bytes behind" in doc["errors"][0], doc["errors"]
    assert "--catch-up-timeout" in doc["errors"][0]
    assert list((tmp_path / "sets").glob("*/manifest.json")) == []  # nothing complete-looking was left
