"""Trust boundaries on real labs: a crafted backup set, a hostile listener, a wrong password, hostile path values.
Each test reproduces a finding that wrote files, ran commands or leaked a password before the validated reader."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import threading
from pathlib import Path

import pytest
import redis

from clusterbak.lab import cluster
from clusterbak.lab.procs import start_server
from tests.integration.test_restore import take_backup, wipe


def manifest_of(sets: Path, backup_id: str) -> tuple[Path, dict]:
    path = sets / backup_id / "manifest.json"
    return path, json.loads(path.read_text())


def rewrite(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_never_creates_a_file_named_by_a_crafted_aof_record(lab, cli, tmp_path):
    """Finding 1: AOF names from the manifest were joined onto a temp dir as given."""
    sets = tmp_path / "sets"
    backup_id = take_backup(cli, lab, sets)
    path, doc = manifest_of(sets, backup_id)
    victim = tmp_path / "planted.sh"
    shard = doc["shards"][0]
    record = dict(shard.pop("file"), name=str(victim), type="b", seq=1)
    (sets / backup_id / "aof").mkdir()
    (sets / backup_id / record["path"]).rename(sets / backup_id / "aof" / record["path"])
    record["path"] = "aof/" + record["path"]
    shard["aof"] = {"filename": "appendonly.aof", "dirname": None, "manifest_name": "appendonly.aof.manifest",
                    "manifest_text": f"file {victim} seq 1 type b\n", "folder": "aof", "files": [record]}
    doc["kind"] = "aof"
    rewrite(path, doc)
    for command in (["verify", backup_id], ["drill", backup_id], ["show", backup_id]):
        result, out = cli.json(*command, "--dest", str(sets))
        assert result.exit_code == 4, (command, out)
        assert "manifest.json" in out["errors"][0] and str(victim) in out["errors"][0]
    assert not victim.exists()


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_a_stored_file_outside_the_set_is_refused_by_every_reader(lab, cli, tmp_path, where):
    """Finding 2: stored-file paths were joined onto the set dir as given; with a matching sha256 verify passed."""
    sets = tmp_path / "sets"
    backup_id = take_backup(cli, lab, sets)
    path, doc = manifest_of(sets, backup_id)
    outside = tmp_path / "outside.conf"
    outside.write_text("host file the attacker wants placed on a node\n")
    record = doc["nodes"][0]["nodes_conf"]
    record.update(sha256=sha(outside), size=outside.stat().st_size)
    if where == "absolute":
        record["path"] = str(outside)
    elif where == "dotdot":
        record["path"] = "../outside.conf"
    else:
        stored = sets / backup_id / record["path"]
        stored.unlink()
        stored.symlink_to(outside)
    rewrite(path, doc)
    result, out = cli.json("verify", backup_id, "--dest", str(sets))
    assert result.exit_code == 4, out
    assert ("symbolic link" if where == "symlink" else "nodes[0].nodes_conf") in " ".join(out["errors"])
    result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", lab.inventory, "--dry-run")
    assert result.exit_code == 4, out
    result, out = cli.json("list", "--dest", str(sets))
    if where != "symlink":  # the manifest itself is crafted: the set is damaged, never complete
        assert [s["status"] for s in out["data"]["sets"]] == ["damaged"]


@pytest.mark.parametrize(("field", "value", "says"), [
    ("node_id", "../../etc/passwd", "40 lowercase hex"),
    ("address", "127.0.0.1:7000$(id)", "host:port"),
    ("format", 99, "format 99"),
])
def test_crafted_fields_are_refused_naming_the_field(lab, cli, tmp_path, field, value, says):
    sets = tmp_path / "sets"
    backup_id = take_backup(cli, lab, sets)
    path, doc = manifest_of(sets, backup_id)
    if field == "node_id":
        doc["topology"]["nodes"][1]["id"] = value
    elif field == "address":
        doc["topology"]["nodes"][1]["address"] = value
    else:
        doc["format"] = value
    rewrite(path, doc)
    for command in (["verify", backup_id], ["restore", backup_id, "--inventory", lab.inventory, "--dry-run"]):
        result, out = cli.json(*command, "--dest", str(sets))
        assert result.exit_code == 4 and says in out["errors"][0], out


def test_restore_into_a_down_node_never_takes_its_dir_from_the_set(make_lab, cli, tmp_path, monkeypatch):
    """Finding 2: a down target's dir came from the manifest and went into `sh -c` unquoted."""
    handle = make_lab(keys=200)
    sets = tmp_path / "sets"
    backup_id = take_backup(cli, handle, sets)
    path, doc = manifest_of(sets, backup_id)
    injected = tmp_path / "injected"
    victim = handle.lab.nodes[1]
    doc["config"][victim.address]["dir"] = f"{victim.dir}$(touch {injected})"
    rewrite(path, doc)
    inventory = Path(handle.inventory)
    text = inventory.read_text().replace(f'data_dir = "{victim.dir}"\n', "", 1)
    inventory.write_text(text)
    wipe(handle)
    monkeypatch.chdir(tmp_path)
    result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", str(inventory), "--yes")
    assert result.exit_code == 3, out
    assert any(victim.address in e and "set data_dir for this node" in e for e in out["errors"])
    assert not injected.exists()


def test_restore_probes_only_inventory_addresses_and_sends_no_password_elsewhere(make_lab, cli, tmp_path):
    """Finding 3: the probe connected to every address the manifest named, sending the password."""
    lab = make_lab(keys=100, access=cluster.LabAccess(password="s3cret-password"))
    sets = tmp_path / "sets"
    result, out = cli.json("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(sets),
                           env={"REDISCLI_AUTH": "s3cret-password"})
    assert result.exit_code == 0, out
    backup_id = out["data"]["backup_id"]
    path, doc = manifest_of(sets, backup_id)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                received.append(conn.recv(4096))
            except OSError:
                pass
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        fake = f"127.0.0.1:{listener.getsockname()[1]}"
        master = doc["topology"]["nodes"][0]
        doc["topology"]["nodes"].append({**master, "id": "c" * 40, "address": fake, "role": "replica",
                                         "master_id": master["id"], "slots": []})
        rewrite(path, doc)
        result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", lab.inventory, "--dry-run",
                               env={"REDISCLI_AUTH": "s3cret-password"})
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert not any(b"s3cret-password" in chunk for chunk in received) and not received
    assert result.exit_code == 3 and any(fake in e for e in out["errors"]), out


def test_an_authentication_failure_is_a_refusal_not_a_down_node(make_lab, cli, tmp_path):
    """Finding 4: a wrong password made every target look down, so the running-cluster guard was bypassed."""
    access = cluster.LabAccess(password="right-password")
    handle = make_lab(keys=100, access=access)
    sets = tmp_path / "sets"
    good = {"REDISCLI_AUTH": "right-password"}
    result, out = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(sets),
                           env=good)
    assert result.exit_code == 0, out
    backup_id = out["data"]["backup_id"]
    other = make_lab(keys=50, access=cluster.LabAccess(password="other-password"))
    maps = [x for i, n in enumerate(handle.lab.nodes) for x in ("--map", f"{n.address}={other.lab.nodes[i].address}")]
    pids = [cluster.current_pid(n) for n in other.lab.nodes]
    result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", other.inventory, *maps, "--yes",
                           env=good)
    assert result.exit_code == 3, out
    assert "authentication failed" in out["errors"][0] and other.lab.nodes[0].address in out["errors"][0]
    assert [cluster.current_pid(n) for n in other.lab.nodes] == pids


def test_a_password_given_to_a_server_without_one_is_an_error(lab, cli):
    """Finding 8: a wrong REDISCLI_AUTH against a server with no password was accepted silently."""
    result, out = cli.json("topology", "--seed", lab.seed, env={"REDISCLI_AUTH": "not-configured"})
    assert result.exit_code == 3 and "AUTH failed" in out["errors"][0], out


def test_inventory_credentials_work_for_backup_restore_rolling_restart_and_drill(make_lab, cli, tmp_path):
    """Finding 5: [redis] username/password_env were parsed but never used."""
    handle = make_lab(keys=300, access=cluster.LabAccess(password="inv-password"))
    inventory = Path(handle.inventory)
    inventory.write_text(inventory.read_text() + '\n[redis]\npassword_env = "LAB_REDIS_PASSWORD"\n')
    env = {"LAB_REDIS_PASSWORD": "inv-password", "REDISCLI_AUTH": ""}
    sets = tmp_path / "sets"
    result, out = cli.json("topology", "--seed", handle.seed, "--inventory", str(inventory), env=env)
    assert result.exit_code == 0, out
    result, out = cli.json("check", "--seed", handle.seed, "--inventory", str(inventory), env=env)
    assert result.exit_code == 0, out
    result, out = cli.json("backup", "--seed", handle.seed, "--inventory", str(inventory), "--dest", str(sets),
                           env=env)
    assert result.exit_code == 0, out
    backup_id = out["data"]["backup_id"]
    result, out = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", str(inventory), "--yes",
                           "--state", str(tmp_path / "state.json"), env=env)
    assert result.exit_code == 0, out
    wipe(handle)
    result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", str(inventory), "--yes", env=env)
    assert result.exit_code == 0, out
    assert all(c["ok"] for c in out["data"]["checks"])
    result, out = cli.json("drill", backup_id, "--dest", str(sets), "--lab-dir", str(tmp_path / "drill"), env=env)
    assert result.exit_code == 0, out


def test_placeholders_are_data_a_hostile_data_dir_stays_a_literal_directory(make_lab, cli, tmp_path, monkeypatch):
    """Finding 6: {data_dir} went into `sh -c` unquoted; a dir with a space, a quote and $(...) must just work."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "we'ird $(touch INJECTED) d\"ir"
    handle = make_lab(keys=200)
    # a second lab whose data dirs carry the hostile name
    from tests.integration.conftest import start_lab

    hostile = start_lab(root)
    try:
        assert os.path.isdir(hostile.lab.nodes[0].dir)
        result, out = cli.json("rolling-restart", "--seed", hostile.seed, "--inventory", hostile.inventory, "--yes",
                               "--state", str(tmp_path / "state.json"))
        assert result.exit_code == 0, out
        sets = tmp_path / "sets"
        backup_id = take_backup(cli, hostile, sets)
        wipe(hostile)
        result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", hostile.inventory, "--yes")
        assert result.exit_code == 0, out
    finally:
        cluster.down(Path(hostile.lab.dir))
    assert not list(tmp_path.rglob("INJECTED"))
    assert handle.lab.nodes  # the plain lab stayed up beside it


def test_a_file_changed_after_verify_is_not_placed_and_the_node_keeps_its_files(make_lab, cli, tmp_path):
    """Finding 7: files were read again without hashing when placed."""
    from clusterbak.config import load_inventory
    from clusterbak.engine.restore import run_restore
    from clusterbak.errors import VerifyError
    from clusterbak.plan.restore import plan_restore
    from clusterbak.redisops.connect import ConnectionOptions
    from clusterbak.redisops.target import probe_target
    from clusterbak.storage.local import LocalRepository

    handle = make_lab(keys=300)
    sets = tmp_path / "sets"
    backup_id = take_backup(cli, handle, sets)
    for n in handle.lab.nodes:  # give every node a dump of its own to keep
        redis.Redis(port=n.port).save()
    before = {n.address: sha(Path(n.dir) / "dump.rdb") for n in handle.lab.nodes}
    store = LocalRepository(sets)
    manifest = store.manifest(backup_id)
    inv = load_inventory(handle.inventory)
    conn = ConnectionOptions(seed=handle.seed)
    plan = plan_restore(manifest, inv, {}, {n.address: probe_target(conn, n.address) for n in handle.lab.nodes},
                        force=True)
    stored = store.path(backup_id) / manifest.shards[1].file.path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the swap between verify and placement
    stored.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match="changed after it was verified|corrupt zstd|truncated zstd"):
        run_restore(plan, store.open_set(backup_id), manifest, inv, conn, verified=True)
    shard1 = {n.new_address for n in plan.nodes if n.shard == 1}
    for n in handle.lab.nodes:
        dump = Path(n.dir) / "dump.rdb"
        if n.address in shard1:
            assert sha(dump) == before[n.address]  # its own file is back, not the tampered one
            assert not list(Path(n.dir).glob("*.clusterbak-tmp-*"))
    for n in handle.lab.nodes:  # the nodes were left stopped on purpose; start them so the lab tears down alike
        if cluster.current_pid(n) is None:
            start_server(Path(n.dir) / "redis.conf", n.port)


def test_restored_files_are_never_world_readable(make_lab, cli, tmp_path):
    handle = make_lab(keys=100)
    sets = tmp_path / "sets"
    backup_id = take_backup(cli, handle, sets)
    wipe(handle)
    result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", handle.inventory, "--yes")
    assert result.exit_code == 0, out
    for n in handle.lab.nodes:
        for name in ("dump.rdb", f"nodes-{n.port}.conf"):
            mode = stat.S_IMODE((Path(n.dir) / name).stat().st_mode)
            assert not mode & 0o007, (name, oct(mode))


def test_local_transport_never_writes_through_a_planted_temp_name(tmp_path):
    from clusterbak.transports.local import LocalTransport

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "dump.rdb"
    for name in (f"{target}.clusterbak-tmp-{os.getpid()}",):  # the old, guessable name
        os.symlink(victim, name)
    import io

    LocalTransport().write_from(str(target), io.BytesIO(b"new bytes"), mode=0o640)
    assert victim.read_text() == "precious\n" and target.read_bytes() == b"new bytes"

