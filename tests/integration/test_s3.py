"""backup / list / show / verify / prune / restore with --dest s3://... against a real s3s-fs process (SigV4,
multipart), plus the faults: missing bucket, wrong credentials, a tampered object, the server gone mid-upload."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import boto3
import pytest
import redis

from clusterbak.lab import s3server
from clusterbak.storage.s3 import S3Options, S3Repository
from tests.integration.test_restore import digests

BUCKET = "backups"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    try:
        s3server.binary()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{exc}", pytrace=False)
    state = tmp_path_factory.mktemp("s3")
    server = s3server.start(state)
    server.make_bucket(BUCKET)
    yield server
    s3server.stop(state)


def client(server):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1")


def cb(cli, server, *args, env_extra=None):
    return cli.json(*args, env={**server.env(), **(env_extra or {})})


def backup(cli, server, handle, dest, *extra, env_extra=None):
    return cb(cli, server, "backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", dest, *extra,
              env_extra=env_extra)


def rdb_saves(handle) -> dict:
    return {n.port: int(redis.Redis(port=n.port).info("persistence")["rdb_saves"]) for n in handle.lab.nodes}


def test_backup_list_verify_restore_round_trip_through_s3(make_lab, cli, s3, tmp_path):
    handle = make_lab(keys=500)
    before = digests(handle)
    dest = f"s3://{BUCKET}/prod/cluster-a"
    result, doc = backup(cli, s3, handle, dest, "--s3-path-style")
    assert result.exit_code == 0, doc["errors"]
    backup_id = doc["data"]["backup_id"]
    keys = [o["Key"] for o in client(s3).list_objects_v2(Bucket=BUCKET, Prefix="prod/cluster-a/")["Contents"]]
    m = doc["data"]["manifest"]
    stored = [s["file"]["path"] for s in m["shards"]] + [
        v["path"] for n in m["nodes"] for v in n.values() if isinstance(v, dict) and "sha256" in v]
    assert len(stored) >= 3 + 6  # the dumps, every nodes.conf (and config/ACL files where the nodes have them)
    assert sorted(keys) == sorted(f"prod/cluster-a/{backup_id}/{p}" for p in stored + ["manifest.json"])
    _, listed = cb(cli, s3, "list", "--dest", dest)
    assert [(s["backup_id"], s["status"], s["shards"]) for s in listed["data"]["sets"]] == [(backup_id, "complete", 3)]
    result, shown = cb(cli, s3, "show", backup_id, "--dest", dest)
    assert result.exit_code == 0 and shown["data"]["totals"]["keys"] == 500
    result, verified = cb(cli, s3, "verify", backup_id, "--dest", dest)
    assert result.exit_code == 0 and verified["data"]["ok"] and len(verified["data"]["files"]) == len(stored)
    # the cluster changes, then the S3 set is streamed back into it
    with redis.RedisCluster(host="127.0.0.1", port=handle.port) as rc:
        rc.set("after-the-backup", "x")
    result, restored = cb(cli, s3, "restore", backup_id, "--dest", dest, "--inventory", handle.inventory, "--yes",
                          "--force")
    assert result.exit_code == 0, restored["errors"]
    assert digests(handle) == before


def test_missing_bucket_and_wrong_credentials_refuse_before_any_bgsave(lab, cli, s3):
    saves = rdb_saves(lab)
    result, doc = backup(cli, s3, lab, "s3://no-such-bucket/x")
    assert result.exit_code == 3 and "bucket does not exist" in doc["errors"][0], doc["errors"]
    result, doc = backup(cli, s3, lab, f"s3://{BUCKET}/x", env_extra={"AWS_SECRET_ACCESS_KEY": "wrong" * 8})
    assert result.exit_code == 3 and "refused the credentials" in doc["errors"][0], doc["errors"]
    assert rdb_saves(lab) == saves  # no node was asked to save
    result, doc = cb(cli, s3, "list", "--dest", "s3://no-such-bucket/x")
    assert result.exit_code == 3 and "bucket does not exist" in doc["errors"][0], doc["errors"]


def test_a_tampered_object_fails_verify_naming_it(lab, cli, s3):
    dest = f"s3://{BUCKET}/tamper"
    result, doc = backup(cli, s3, lab, dest)
    assert result.exit_code == 0, doc["errors"]
    backup_id = doc["data"]["backup_id"]
    victim = doc["data"]["manifest"]["shards"][1]["file"]["path"]
    c = client(s3)
    key = f"tamper/{backup_id}/{victim}"
    body = bytearray(c.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    c.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))
    result, doc = cb(cli, s3, "verify", backup_id, "--dest", dest)
    assert result.exit_code == 4
    assert any(victim in e for e in doc["errors"]) and len(doc["errors"]) == 1, doc["errors"]


def test_prune_removes_old_s3_sets_and_stale_partials(lab, cli, s3):
    dest = f"s3://{BUCKET}/prune"
    ids = []
    for _ in range(2):
        result, doc = backup(cli, s3, lab, dest)
        assert result.exit_code == 0, doc["errors"]
        ids.append(doc["data"]["backup_id"])
        time.sleep(1.1)  # backup ids have one-second resolution
    client(s3).put_object(Bucket=BUCKET, Key="prune/20200101T000000Z-dead/shard-00-x.rdb.zst", Body=b"half")
    result, doc = cb(cli, s3, "prune", "--dest", dest, "--keep-last", "1", "--partial-grace-hours", "0", "--dry-run")
    assert result.exit_code == 0
    planned = {d["backup_id"]: d["action"] for d in doc["data"]["decisions"]}
    assert planned == {ids[0]: "delete", ids[1]: "keep", "20200101T000000Z-dead": "delete"}
    assert len(cb(cli, s3, "list", "--dest", dest)[1]["data"]["sets"]) == 3  # a dry run deletes nothing
    result, doc = cb(cli, s3, "prune", "--dest", dest, "--keep-last", "1", "--partial-grace-hours", "0", "--yes")
    assert result.exit_code == 0 and sorted(doc["data"]["deleted"]) == sorted([ids[0], "20200101T000000Z-dead"])
    left = client(s3).list_objects_v2(Bucket=BUCKET, Prefix="prune/").get("Contents", [])
    assert {o["Key"].split("/")[1] for o in left} == {ids[1]}


def _size(path: Path) -> int:
    try:  # the server creates and removes files while we look
        return path.stat().st_size if path.is_file() else 0
    except FileNotFoundError:
        return 0


def test_server_stopped_mid_upload_fails_cleanly_and_a_rerun_works(make_lab, cli, tmp_path):
    state = tmp_path / "s3-mid"
    server = s3server.start(state)
    server.make_bucket(BUCKET)
    handle = make_lab(keys=0)
    with redis.RedisCluster(host="127.0.0.1", port=handle.port) as rc:  # ~24 MB of random values: several parts
        for i in range(96):
            rc.set(f"blob:{i}", bytes(__import__("os").urandom(256 * 1024)))
    dest = f"s3://{BUCKET}/mid"
    seen_data = threading.Event()

    def watch():  # stop the server as soon as the first part of a dump is on it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen_data.is_set():
            if any(_size(p) > 1 << 20 for p in server.root.rglob("*")):
                seen_data.set()
                s3server.stop(state)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    result, doc = backup(cli, server, handle, dest, "--s3-part-size-mb", "5", "--s3-concurrency", "1",
                         "--compress", "none", "--parallel", "1")
    watcher.join()
    assert seen_data.is_set()
    assert result.exit_code == 4, doc["errors"]
    assert "s3://" in doc["errors"][0]
    server = s3server.start(state, port=server.port)  # same data dir: whatever was left is still there
    _, listed = cb(cli, server, "list", "--dest", dest)
    assert all(s["status"] != "complete" for s in listed["data"]["sets"])
    result, doc = backup(cli, server, handle, dest, "--s3-part-size-mb", "5")
    assert result.exit_code == 0, doc["errors"]
    result, doc = cb(cli, server, "verify", doc["data"]["backup_id"], "--dest", dest)
    assert result.exit_code == 0
    s3server.stop(state)


def test_repository_streams_a_large_file_in_parts_with_bounded_buffers(s3):
    repo = S3Repository.from_url(f"s3://{BUCKET}/unit", S3Options(endpoint_url=s3.endpoint, part_size=5 << 20,
                                                                   concurrency=2))
    repo.client = client(s3)
    writer = repo.begin("20260101T000000Z-0001")
    sink = writer.open_sink("blob.bin", "none")
    data = bytes(range(256)) * 4096  # 1 MiB
    for _ in range(12):
        sink.write(data)
        assert sink.sink.out._made <= 3  # part buffers: concurrency + 1, reused
    written = sink.close()
    head = client(s3).head_object(Bucket=BUCKET, Key="unit/20260101T000000Z-0001/blob.bin")
    assert head["ContentLength"] == 12 << 20 and written.stored_size == 12 << 20
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of 3 parts


def test_an_encrypted_aof_set_on_s3_verifies_with_the_identity_and_redis_check_aof(make_lab, cli, s3, tmp_path):
    from clusterbak.storage.keys import generate
    from tests.integration.test_aof import AOF

    made = generate(str(tmp_path / "keys"))
    handle = make_lab(keys=300, extra_conf=AOF)
    dest = f"s3://{BUCKET}/aof"
    result, doc = backup(cli, s3, handle, dest, "--aof", "--encrypt-to", made["recipient"])
    assert result.exit_code == 0, doc["errors"]
    backup_id = doc["data"]["backup_id"]
    result, doc = cb(cli, s3, "verify", backup_id, "--dest", dest, "--identity", made["identity"])
    assert result.exit_code == 0, doc["errors"]
    checked = [f for f in doc["data"]["files"] if "redis-check-aof" in f["file"]]
    assert checked and all(f["ok"] and not f.get("note") for f in checked), checked


def test_check_dest_on_s3_reads_the_verify_and_drill_records_stored_beside_the_set(lab, cli, s3):
    """verify and drill of an S3 set record their result in the bucket (verify.json / drill.json beside the
    manifest), and `check --dest s3://...` (and --nagios) judges freshness from them exactly as for a directory."""
    dest = f"s3://{BUCKET}/fresh"
    result, doc = backup(cli, s3, lab, dest)
    assert result.exit_code == 0, doc["errors"]
    backup_id = doc["data"]["backup_id"]
    result, out = cb(cli, s3, "check", "--dest", dest, "--max-age", "26h")
    assert result.exit_code == 3
    by_name = {c["name"]: c["status"] for c in out["data"]["backups"]}
    assert by_name["newest verified set"] == "CRITICAL" and by_name["destination"] == "OK", out["data"]
    assert by_name["last verify"] == "WARNING" and by_name["last drill"] == "WARNING"
    nag = cli("check", "--dest", dest, "--nagios", env=s3.env())
    assert nag.exit_code == 2 and nag.stdout.startswith("CLUSTERBAK CRITICAL"), nag.stdout

    result, doc = cb(cli, s3, "verify", "latest", "--dest", dest)
    assert result.exit_code == 0, doc["errors"]
    record = json.loads(client(s3).get_object(Bucket=BUCKET, Key=f"fresh/{backup_id}/verify.json")["Body"].read())
    assert record["ok"] is True and record["problems"] == []
    _, listed = cb(cli, s3, "list", "--dest", dest)
    assert [(s["backup_id"], s["status"], s["verified"]) for s in listed["data"]["sets"]] == \
        [(backup_id, "complete", True)]
    result, out = cb(cli, s3, "check", "--dest", dest, "--max-age", "26h")
    assert result.exit_code == 0, out["errors"]
    by_name = {c["name"]: c["status"] for c in out["data"]["backups"]}
    assert by_name["newest verified set"] == "OK" and by_name["last drill"] == "WARNING", out["data"]

    result, doc = cb(cli, s3, "drill", "latest", "--dest", dest)
    assert result.exit_code == 0, doc["errors"]
    record = json.loads(client(s3).get_object(Bucket=BUCKET, Key=f"fresh/{backup_id}/drill.json")["Body"].read())
    assert record["ok"] is True and record["rto_seconds"] == doc["data"]["rto_seconds"]
    nag = cli("check", "--dest", dest, "--nagios", env=s3.env())
    assert nag.exit_code == 0 and nag.stdout.startswith("CLUSTERBAK OK - 7 checks ok |"), nag.stdout
    # the records are not set files: the set still lists complete, verifies, and prune deletes them with the set
    _, listed = cb(cli, s3, "list", "--dest", dest)
    assert listed["data"]["sets"][0]["status"] == "complete"

    # a bucket that is not there is one CRITICAL line (a typo must not look like "no backups"), never UNKNOWN
    result, out = cb(cli, s3, "check", "--dest", "s3://no-such-bucket/fresh")
    assert result.exit_code == 3
    assert [(c["name"], c["status"]) for c in out["data"]["backups"]] == [("destination", "CRITICAL")]
    assert "bucket does not exist" in out["data"]["backups"][0]["detail"]


def test_parts_grow_for_a_big_file_and_small_objects_take_no_part_buffer(s3, monkeypatch):
    """S3 allows 10000 parts: every GROW_EVERY parts the part size doubles, so 5 MiB parts (memory) still carry
    any shard; a small object (nodes.conf) is one PUT from its own small buffer, never an 8 MiB part buffer."""
    from clusterbak.storage import s3 as s3mod

    monkeypatch.setattr(s3mod, "GROW_EVERY", 2)
    repo = S3Repository.from_url(f"s3://{BUCKET}/grow", S3Options(endpoint_url=s3.endpoint, part_size=5 << 20,
                                                                   concurrency=1))
    repo.client = client(s3)
    writer = repo.begin("20260101T000000Z-0002")
    small = writer.open_sink("nodes.conf", "none")
    small.write(b"x" * 1000)
    assert small.sink.out._made == 0
    small.close()
    sink = writer.open_sink("blob.bin", "none")
    data = bytes(range(256)) * 4096  # 1 MiB
    for i in range(32):
        sink.write(data[i:] + data[:i])
    sink.close()
    head = client(s3).head_object(Bucket=BUCKET, Key="grow/20260101T000000Z-0002/blob.bin")
    assert head["ContentLength"] == 32 << 20
    assert head["ETag"].strip('"').endswith("-5")  # 5 + 5 + 10 + 10 MiB, then the last 2 MiB (20 MiB part size)
    body = client(s3).get_object(Bucket=BUCKET, Key="grow/20260101T000000Z-0002/blob.bin")["Body"].read()
    assert body == b"".join(data[i:] + data[:i] for i in range(32))
    assert client(s3).get_object(Bucket=BUCKET, Key="grow/20260101T000000Z-0002/nodes.conf")["Body"].read() == \
        b"x" * 1000
