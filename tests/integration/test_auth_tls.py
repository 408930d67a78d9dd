"""Least-privilege ACL users and a TLS-only cluster, on real labs: every job works with exactly the rights
docs/security.md lists, and TLS is verified (a wrong CA is refused with exit 3)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from redis.cluster import ClusterNode, RedisCluster

from clusterbak.lab import cluster
from clusterbak.lab.load import _write
from tests.integration.test_restore import wipe

# Keep these in step with docs/security.md ("Least-privilege users").
BACKUP_ACL = ("-@all +ping +info +time +dbsize +cluster|nodes +cluster|myid +cluster|info +config|get +bgsave "
              "+bgrewriteaof +config|set +client|setname +client|id +client|list +module|list +acl|list")
RESTART_ACL = ("-@all +ping +info +time +dbsize +cluster|nodes +cluster|myid +cluster|info +config|get "
               "+cluster|failover +shutdown +client|setname +client|id +client|list +module|list")


def acl_users() -> dict[str, str]:
    # redis.conf takes one `user` line per user; the lab writes "key value" lines, so both go in one value
    return {"user": f"backup on >backup-pw {BACKUP_ACL}\nuser restarter on >restart-pw {RESTART_ACL}"}


def test_least_privilege_users_back_up_restart_and_restore(make_lab, cli, tmp_path):
    handle = make_lab(keys=300, extra_conf=acl_users())
    sets = tmp_path / "sets"
    backup_env = {"REDISCLI_AUTH": "backup-pw"}
    restart_env = {"REDISCLI_AUTH": "restart-pw"}
    result, out = cli.json("check", "--seed", handle.seed, "--inventory", handle.inventory, "--user", "backup",
                           env=backup_env)
    assert result.exit_code == 0, out
    result, out = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(sets),
                           "--user", "backup", env=backup_env)
    assert result.exit_code == 0, out
    backup_id = out["data"]["backup_id"]
    assert out["data"]["manifest"]["warnings"] == []  # these rights collect config files, users and modules too
    assert all(n["acl"]["source"] == "acl-list" and n["modules"] == [] for n in out["data"]["manifest"]["nodes"])
    # the restart user may not BGSAVE: refused naming the node and the cause, nothing written
    result, out = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(sets),
                           "--user", "restarter", env=restart_env)
    assert result.exit_code == 3 and "NOPERM" in out["errors"][0].upper() and "127.0.0.1:" in out["errors"][0], out[
        "errors"
    ]
    result, out = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", handle.inventory, "--yes",
                           "--user", "restarter", "--state", str(tmp_path / "state.json"), env=restart_env)
    assert result.exit_code == 0, out
    wipe(handle)
    result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", handle.inventory, "--yes",
                           "--user", "restarter", env=restart_env)
    assert result.exit_code == 0, out
    assert all(c["ok"] for c in out["data"]["checks"])


@pytest.fixture
def tls_files(tmp_path) -> Path:
    """A CA, a node certificate for 127.0.0.1 signed by it, and a second CA that signed nothing here."""
    d = tmp_path / "tls"
    d.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=clusterbak {ca}",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "node.key", "-out",
            "node.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "node.crt")
    return d


def fill_over_tls(handle, tls: Path, keys: int) -> None:
    client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", handle.port)], ssl=True,
                          ssl_ca_certs=str(tls / "ca.crt"), ssl_certfile=str(tls / "node.crt"),
                          ssl_keyfile=str(tls / "node.key"), socket_timeout=30)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(keys):
            _write(pipe, ("string", "hash", "list", "set", "zset", "stream")[i % 6], f"tls:{i}", b"v%d" % i, i)
        pipe.execute()
    finally:
        client.close()


def test_a_tls_only_cluster_topology_backup_restart_restore_and_a_wrong_ca(make_lab, cli, tmp_path, tls_files):
    handle = make_lab(access=cluster.LabAccess(tls_dir=str(tls_files)))
    fill_over_tls(handle, tls_files, 300)
    tls = ["--tls", "--cacert", str(tls_files / "ca.crt"), "--cert", str(tls_files / "node.crt"),
           "--key", str(tls_files / "node.key")]
    result, out = cli.json("topology", "--seed", handle.seed, *tls)
    assert result.exit_code == 0, out
    wrong = ["--tls", "--cacert", str(tls_files / "other-ca.crt")]
    result, out = cli.json("topology", "--seed", handle.seed, *wrong)
    assert result.exit_code == 3 and "TLS failed" in out["errors"][0] and handle.seed in out["errors"][0], out
    sets = tmp_path / "sets"
    result, out = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(sets), *tls)
    assert result.exit_code == 0, out
    backup_id = out["data"]["backup_id"]
    assert out["data"]["manifest"]["totals"]["keys"] == 300
    # --via sync over TLS too: the PSYNC stream is the same TLS connection a client gets, certificate checked
    result, out = cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest",
                           str(tmp_path / "synced"), "--via", "sync", *tls)
    assert result.exit_code == 0, out
    synced = out["data"]["manifest"]
    assert synced["totals"]["keys"] == 300 and {s["save"]["via"] for s in synced["shards"]} == {"sync"}
    result, out = cli.json("rolling-restart", "--seed", handle.seed, "--inventory", handle.inventory, "--yes",
                           "--state", str(tmp_path / "state.json"), *tls)
    assert result.exit_code == 0, out
    pids = [cluster.current_pid(n) for n in handle.lab.nodes]
    result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", handle.inventory, "--yes", *wrong)
    assert result.exit_code == 3 and "TLS" in out["errors"][0], out  # a wrong CA is not "down": refused
    assert [cluster.current_pid(n) for n in handle.lab.nodes] == pids  # nothing was stopped
    wipe(handle)
    result, out = cli.json("restore", backup_id, "--dest", str(sets), "--inventory", handle.inventory, "--yes", *tls)
    assert result.exit_code == 0, out
    assert all(c["ok"] for c in out["data"]["checks"])
