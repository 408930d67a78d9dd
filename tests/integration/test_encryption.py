"""Encrypted (age) and signed (Ed25519) sets, local and on S3: what an operator checks with the stock tools."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import redis

from clusterbak.lab import s3server
from tests.integration.test_restore import digests

BUCKET = "vault"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from clusterbak.storage.keys import generate

    base = tmp_path_factory.mktemp("keys")
    return generate(str(base / "ours")), generate(str(base / "other"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    state = tmp_path_factory.mktemp("s3enc")
    server = s3server.start(state)
    server.make_bucket(BUCKET)
    yield server
    s3server.stop(state)


def backup(cli, handle, dest, ours, env=None):
    return cli.json("backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", dest,
                    "--encrypt-to", ours["recipient"], "--sign-key", ours["signing_key"], env=env)


def test_an_encrypted_signed_local_set(lab, cli, keys, tmp_path):
    ours, other = keys
    dest = tmp_path / "sets"
    result, doc = backup(cli, lab, str(dest), ours)
    assert result.exit_code == 0, doc["errors"]
    backup_id = doc["data"]["backup_id"]
    set_dir = dest / backup_id
    text = (set_dir / "manifest.json").read_text()
    assert "AGE-SECRET-KEY" not in text and "PRIVATE KEY" not in text
    m = json.loads(text)
    files = [s["file"] for s in m["shards"]] + [n["nodes_conf"] for n in m["nodes"]]
    for f in files:
        assert f["encryption"] == {"scheme": "age", "recipients": [ours["recipient"]]}
        stored = (set_dir / f["path"]).read_bytes()
        assert stored.startswith(b"age-encryption.org/v1\n") and hashlib.sha256(stored).hexdigest() == f["sha256"]
        assert len(f["raw_sha256"]) == 64
    # the stock age CLI decrypts a stored dump; zstd -d gives back the bytes whose sha256 the manifest records
    if not shutil.which("age"):
        pytest.fail("the age CLI is not installed (scripts/setup.sh installs it)", pytrace=False)
    dump = files[0]
    plain = tmp_path / "dump.rdb.zst"
    subprocess.run(["age", "-d", "-i", ours["identity"], "-o", str(plain), str(set_dir / dump["path"])], check=True,
                   timeout=60)
    raw = subprocess.run(["zstd", "-d", "-c", str(plain)], check=True, capture_output=True, timeout=60).stdout
    assert hashlib.sha256(raw).hexdigest() == dump["raw_sha256"] and raw.startswith(b"REDIS")
    conf = files[-1]
    out = subprocess.run(["age", "-d", "-i", ours["identity"], str(set_dir / conf["path"])], check=True,
                         capture_output=True, timeout=60).stdout
    assert hashlib.sha256(out).hexdigest() == conf["raw_sha256"] and b"vars currentEpoch" in out

    # verify: without the identity the stored bytes only (and it says so); with it, everything; a wrong one: 4
    result, doc = cli.json("verify", backup_id, "--dest", str(dest))
    assert result.exit_code == 0 and doc["data"]["decrypted"] is False
    assert all("not decrypted" in f["note"] for f in doc["data"]["files"])
    result, doc = cli.json("verify", backup_id, "--dest", str(dest), "--identity", ours["identity"],
                           "--verify-key", ours["verify_key"])
    assert result.exit_code == 0 and doc["data"]["decrypted"] is True, doc["errors"]
    result, doc = cli.json("verify", backup_id, "--dest", str(dest), "--identity", other["identity"])
    assert result.exit_code == 4 and "cannot decrypt" in doc["errors"][0], doc["errors"]

    # signatures: another key, a missing signature, a rewritten manifest: exit 4 before anything is read
    result, doc = cli.json("verify", backup_id, "--dest", str(dest), "--verify-key", other["verify_key"])
    assert result.exit_code == 4 and "signature does not match" in doc["errors"][0], doc["errors"]
    m["totals"]["keys"] += 1
    (set_dir / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    result, doc = cli.json("verify", backup_id, "--dest", str(dest), "--verify-key", ours["verify_key"])
    assert result.exit_code == 4 and "signature does not match" in doc["errors"][0], doc["errors"]
    (set_dir / "manifest.json.sig").unlink()
    result, doc = cli.json("verify", backup_id, "--dest", str(dest), "--verify-key", ours["verify_key"])
    assert result.exit_code == 4 and "not signed" in doc["errors"][0], doc["errors"]


def test_restore_refuses_a_wrong_key_before_touching_and_streams_an_encrypted_s3_set_back(make_lab, cli, keys, s3):
    ours, other = keys
    handle = make_lab(keys=300)
    before = digests(handle)
    dest = f"s3://{BUCKET}/enc"
    env = s3.env()
    result, doc = backup(cli, handle, dest, ours, env=env)
    assert result.exit_code == 0, doc["errors"]
    backup_id = doc["data"]["backup_id"]
    with redis.RedisCluster(host="127.0.0.1", port=handle.port) as rc:
        rc.set("written-after-the-backup", "1")
    run_ids = {n.port: redis.Redis(port=n.port).info("server")["run_id"] for n in handle.lab.nodes}
    restore = ["restore", backup_id, "--dest", dest, "--inventory", handle.inventory, "--yes", "--force"]
    result, doc = cli.json(*restore, "--verify-key", other["verify_key"], "--identity", ours["identity"], env=env)
    assert result.exit_code == 4 and "signature does not match" in doc["errors"][0], doc["errors"]
    result, doc = cli.json(*restore, env=env)
    assert result.exit_code == 3 and "--identity" in doc["errors"][0], doc["errors"]
    result, doc = cli.json(*restore, "--identity", other["identity"], env=env)
    assert result.exit_code == 4 and "cannot decrypt" in doc["errors"][0], doc["errors"]
    result, doc = cli.json("drill", backup_id, "--dest", dest, "--identity", ours["identity"], "--verify-key",
                           ours["verify_key"], env=env)  # a throwaway lab fed straight from the S3 objects
    assert result.exit_code == 0 and doc["data"]["ok"] and doc["data"]["keys"] == 300, doc["errors"]
    # nothing was stopped or replaced by the refused runs
    assert {n.port: redis.Redis(port=n.port).info("server")["run_id"] for n in handle.lab.nodes} == run_ids
    result, doc = cli.json(*restore, "--identity", ours["identity"], "--verify-key", ours["verify_key"], env=env)
    assert result.exit_code == 0, doc["errors"]
    assert digests(handle) == before


def test_a_killed_restore_of_an_encrypted_s3_set_resumes_with_the_identity(make_lab, cli, keys, s3):
    """kill -9 mid-restore of an encrypted, signed S3 set: a new restore is refused naming --resume; --resume
    without --identity is refused (exit 3, naming --identity) before any node is touched; --resume with the
    identity (and the verify key: the signature is checked again) finishes the restore."""
    from tests.faults.common import wait_for
    from tests.faults.test_restore_faults import journal, journal_phase, settle_and_save

    ours, _ = keys
    handle = make_lab(keys=300)
    settle_and_save(handle)
    before = digests(handle)
    dest = f"s3://{BUCKET}/resume"
    env = s3.env()
    result, doc = backup(cli, handle, dest, ours, env=env)
    assert result.exit_code == 0, doc["errors"]
    backup_id = doc["data"]["backup_id"]
    with redis.RedisCluster(host="127.0.0.1", port=handle.port) as rc:
        rc.set("written-after-the-backup", "1")
    restore = ["restore", backup_id, "--dest", dest, "--inventory", handle.inventory, "--yes"]
    proc = subprocess.Popen([sys.executable, "-m", "clusterbak", *restore, "--force", "--json", "--identity",
                             ours["identity"], "--verify-key", ours["verify_key"]], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: journal_phase(handle) in ("placing", "starting"), 60, "the restore places files",
                 interval=0.005)
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    cut = journal(handle)
    assert cut is not None and cut["backup_id"] == backup_id
    result, doc = cli.json(*restore, env=env)
    assert result.exit_code == 3 and "was cut short" in doc["errors"][0], doc["errors"]
    assert "--resume" in doc["errors"][0], doc["errors"]
    result, doc = cli.json(*restore, "--resume", env=env)
    assert result.exit_code == 3 and "--identity" in doc["errors"][0], doc["errors"]
    assert journal(handle) == cut  # refused before anything moved
    result, doc = cli.json(*restore, "--resume", "--identity", ours["identity"], "--verify-key", ours["verify_key"],
                           env=env)
    assert result.exit_code == 0, doc["errors"]
    assert digests(handle) == before
    assert journal(handle) is None
