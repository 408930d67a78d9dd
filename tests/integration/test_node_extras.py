"""Everything a node needs to come back, on real labs: its config file, its ACL users and its tuning.

backup -> wipe every node, config and ACL file included -> restore --with-config -> the users authenticate with the
same permissions, the tuned settings are back, the data digests match; a --map restore rewrites the address
directives; a drill restores the users and proves one. The passwords (and their ACL hashes) never appear in
anything clusterbak prints."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from clusterbak.lab import cluster
from clusterbak.lab.procs import stop_pid
from clusterbak.model.nodeconfig import entries

ADMIN_PW = "adm-Xq7-secret"
ALICE_PW = "alice-Zr4-secret"
BOB_PW = "bob-Kp2-secret"
PASSWORDS = (ADMIN_PW, ALICE_PW, BOB_PW)
SECRETS = PASSWORDS + tuple(hashlib.sha256(p.encode()).hexdigest() for p in PASSWORDS)
USERS = (f"user default on >{ADMIN_PW} ~* &* +@all\n"
         f"user alice on >{ALICE_PW} ~app:* resetchannels -@all +get +set +ping\n"
         f"user bob on >{BOB_PW} ~* resetchannels -@all +@read +ping\n"
         f"user narrow on >{BOB_PW} resetchannels -@all +ping +info +time +dbsize +cluster|nodes +cluster|myid "
         "+cluster|info +config|get +bgsave +client|setname +client|id +client|list\n")  # no +module|list
TUNED = {"maxmemory": "67108864", "maxmemory-policy": "allkeys-lru", "hz": "17", "slowlog-log-slower-than": "4321"}


class Captured:
    """Everything the commands printed, to search for secrets at the end."""

    def __init__(self, cli):
        self.cli, self.texts = cli, []

    def run(self, *args, env=None, json_out=True):
        if json_out:
            result, doc = self.cli.json(*args, env=env)
        else:
            result, doc = self.cli(*args, env=env), None
        self.texts += [result.stdout, result.stderr]
        return result, doc

    def assert_no_secrets(self):
        blob = "\n".join(self.texts)
        assert blob, "nothing captured"
        for secret in SECRETS:
            assert secret not in blob, f"a test password or its hash was printed ({secret[:6]}...)"


def client(port, **kw):
    return redis.Redis(port=port, decode_responses=True, socket_timeout=10, **kw)


def digests(handle, password):
    out = {}
    for n in handle.lab.nodes:
        c = client(n.port, password=password)
        if c.info("replication")["role"] == "master":
            out[c.execute_command("CLUSTER", "MYID")] = (c.execute_command("DEBUG", "DIGEST"), c.dbsize())
    return out


def settings(handle, password):
    return {n.port: {k: client(n.port, password=password).config_get(k)[k] for k in TUNED} for n in handle.lab.nodes}


def wipe_everything(handle):
    """Stop every node and remove its whole directory content: data, nodes.conf, redis.conf, users.acl."""
    for n in handle.lab.nodes:
        stop_pid(cluster.current_pid(n))
        for f in Path(n.dir).iterdir():
            shutil.rmtree(f) if f.is_dir() else f.unlink()


def persist_all(handle, password):
    for n in handle.lab.nodes:
        c = client(n.port, password=password)
        if c.info("replication")["role"] == "master":
            for key in c.scan_iter(count=1000):
                c.persist(key)


@pytest.mark.slow
def test_config_users_and_tuning_come_back_and_no_secret_is_ever_printed(make_lab, cli, tmp_path):
    access = cluster.LabAccess(password=ADMIN_PW, acl_users=USERS)
    handle = make_lab(keys=400, access=access, extra_conf=TUNED)
    persist_all(handle, ADMIN_PW)
    rc = RedisCluster(host="127.0.0.1", port=handle.port, password=ADMIN_PW, decode_responses=True)
    for i in range(20):
        rc.set(f"app:{i}", "v")
    rc.close()
    before, tuned = digests(handle, ADMIN_PW), settings(handle, ADMIN_PW)
    sets, env = tmp_path / "sets", {"REDISCLI_AUTH": ADMIN_PW}
    run = Captured(cli)
    result, out = run.run("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(sets),
                          env=env)
    assert result.exit_code == 0, out["errors"]
    backup_id = out["data"]["backup_id"]
    nodes = out["data"]["manifest"]["nodes"]
    assert len(nodes) == 6 and all(n["config_file"]["source_path"].endswith("/redis.conf") for n in nodes)
    assert all(n["acl"]["source"] == "aclfile" and n["modules"] == [] for n in nodes)
    for n in nodes:  # secrets-bearing files are stored 0600
        for key in ("config_file", "acl"):
            assert stat.S_IMODE(os.stat(sets / backup_id / n[key]["path"]).st_mode) == 0o600
    result, _ = run.run("show", backup_id, "--dest", str(sets), json_out=False)
    assert result.exit_code == 0 and "files holding secrets" in result.stdout and "users (aclfile)" in result.stdout
    run.run("show", backup_id, "--dest", str(sets))
    result, out = run.run("verify", backup_id, "--dest", str(sets))
    assert result.exit_code == 0 and len(out["data"]["files"]) == 3 + 6 * 3  # dumps, nodes.conf, configs, users

    # a node that cannot give something is a warning in the manifest, not a failed backup
    result, out = run.run("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest",
                          str(tmp_path / "narrow"), "--user", "narrow", env={"REDISCLI_AUTH": BOB_PW})
    assert result.exit_code == 0, out["errors"]
    warned = [w for w in out["data"]["manifest"]["warnings"] if "MODULE LIST not permitted (NOPERM)" in w]
    assert len(warned) == 6 and all("modules" not in n for n in out["data"]["manifest"]["nodes"])

    # the drill restores the users and proves one authenticates (its own `default` stays, to check the cluster)
    result, out = run.run("drill", backup_id, "--dest", str(sets), "--prove-user", "alice",
                          env={"CLUSTERBAK_PROVE_PASSWORD": ALICE_PW})
    assert result.exit_code == 0, out["errors"]
    auth = [c for c in out["data"]["checks"] if c["check"] == "user alice authenticates"]
    assert len(auth) == 6 and all(c["ok"] for c in auth)
    result, out = run.run("drill", backup_id, "--dest", str(sets), "--prove-user", "alice",
                          env={"CLUSTERBAK_PROVE_PASSWORD": "not-her-password"})
    assert result.exit_code == 4 and any("alice authenticates" in e for e in out["errors"])

    wipe_everything(handle)
    result, _ = run.run("restore", backup_id, "--dest", str(sets), "--inventory", handle.inventory, "--with-config",
                        "--dry-run", env=env, json_out=False)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "maxmemory-policy" in result.stdout and "<secret>" in result.stdout and "users.acl" in result.stdout
    result, out = run.run("restore", backup_id, "--dest", str(sets), "--inventory", handle.inventory,
                          "--with-config", "--yes", env=env)
    assert result.exit_code == 0, out["errors"]
    assert all(c["ok"] for c in out["data"]["checks"])
    assert digests(handle, ADMIN_PW) == before
    assert settings(handle, ADMIN_PW) == tuned
    for n in handle.lab.nodes:
        assert stat.S_IMODE(os.stat(Path(n.dir) / "users.acl").st_mode) == 0o600
        alice = client(n.port, username="alice", password=ALICE_PW)
        assert alice.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            alice.config_get("maxmemory")  # the restricted user is still restricted
        bob = client(n.port, username="bob", password=BOB_PW)
        with pytest.raises(redis.exceptions.NoPermissionError):
            bob.set("app:x", "1")
        with pytest.raises(redis.AuthenticationError):
            client(n.port, username="alice", password=BOB_PW).ping()
    master = next(n for n in handle.lab.nodes if client(n.port, password=ADMIN_PW).info("replication")["role"]
                  == "master")
    key = next(iter(client(master.port, password=ADMIN_PW).scan_iter(match="app:*")), None)
    if key is not None:
        assert client(master.port, username="alice", password=ALICE_PW).get(key) == "v"

    # --with-acl alone: the users file goes back into each node's aclfile; the config file is left as it is now
    for n in handle.lab.nodes:
        admin = client(n.port, password=ADMIN_PW)
        admin.execute_command("ACL", "SETUSER", "alice", "resetpass", ">changed-pw")
        admin.execute_command("ACL", "SAVE")
    result, out = run.run("restore", backup_id, "--dest", str(sets), "--inventory", handle.inventory, "--with-acl",
                          "--force", "--yes", env=env)
    assert result.exit_code == 0, out["errors"]
    assert all(n["config_path"] is None and n["acl_path"] for n in out["data"]["plan"]["nodes"])
    for n in handle.lab.nodes:
        assert client(n.port, username="alice", password=ALICE_PW).ping()
    run.assert_no_secrets()


def test_a_mapped_restore_rewrites_the_address_directives(make_lab, cli, tmp_path):
    src = make_lab(masters=2, replicas=0, keys=200, extra_conf={"maxmemory-policy": "volatile-lfu"}, ssh=True)
    persist_all(src, None)
    before = sorted(digests(src, None).values())
    run = Captured(cli)
    result, out = run.run("backup", "--seed", src.seed, "--inventory", src.inventory, "--dest", str(tmp_path / "s"),
                          "--source", "master")
    assert result.exit_code == 0, out["errors"]
    backup_id = out["data"]["backup_id"]
    dst = make_lab(masters=2, replicas=0, ssh=True)  # files read and placed over SSH
    maps = [a for old, new in zip(src.lab.nodes, dst.lab.nodes, strict=True)
            for a in ("--map", f"{old.address}={new.address}")]
    result, out = run.run("restore", backup_id, "--dest", str(tmp_path / "s"), "--inventory", dst.inventory, *maps,
                          "--with-config", "--force", "--yes")
    assert result.exit_code == 0, out["errors"]
    for planned in out["data"]["plan"]["nodes"]:
        changes = {c["directive"]: c for c in planned["config_changes"]}
        assert changes["maxmemory-policy"] == {"directive": "maxmemory-policy", "before": None, "after": "volatile-lfu"}
        assert "port" not in changes  # rewritten to the target's own port: the diff shows no change there
        assert dict(planned["config_edits"])["port"] == planned["new_address"].rsplit(":", 1)[1]
    for new in dst.lab.nodes:
        placed = entries((Path(new.dir) / "redis.conf").read_text())
        assert placed["port"] == [str(new.port)] and placed["dir"] == [new.dir]
        assert placed["pidfile"] == [str(Path(new.dir) / "redis.pid")]  # beside the data: `lab down` finds it
        assert placed["cluster-config-file"] == [f"nodes-{new.port}.conf"]
        assert client(new.port).config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lfu"
    assert sorted(digests(dst, None).values()) == before
    assert all(cluster.current_pid(n) is not None for n in src.lab.nodes)  # the source was left alone
