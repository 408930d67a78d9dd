"""S3 Object Lock (--lock-days / --lock-mode) against moto's standalone server: s3s-fs, the server of the other S3
tests, does not implement Object Lock. moto checks no signatures; everything else here is the real protocol."""

from __future__ import annotations

import datetime

import boto3
import pytest

from clusterbak.lab import s3server

LOCKED, PLAIN = "locked-sets", "plain-sets"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    state = tmp_path_factory.mktemp("moto")
    try:
        server = s3server.start_moto(state)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{exc}", pytrace=False)
    try:
        c = client(server)
        c.create_bucket(Bucket=LOCKED, ObjectLockEnabledForBucket=True)
        c.create_bucket(Bucket=PLAIN)
        yield server
    finally:
        s3server.stop(state, name="moto")


def client(server):
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1")


def backup(cli, server, lab, dest, *extra):
    return cli.json("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", dest, "--s3-path-style",
                    *extra, env=server.env())


def test_locked_sets_are_retained_and_prune_keeps_them_saying_why(lab, cli, moto):
    dest = f"s3://{LOCKED}/prod"
    ids = []
    for _ in range(2):
        result, doc = backup(cli, moto, lab, dest, "--lock-days", "2", "--lock-mode", "governance")
        assert result.exit_code == 0, doc["errors"]
        ids.append(doc["data"]["backup_id"])
    c = client(moto)
    objects = c.list_objects_v2(Bucket=LOCKED, Prefix=f"prod/{ids[0]}/")["Contents"]
    assert len(objects) >= 9 and any(o["Key"].endswith("/manifest.json") for o in objects)
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    for o in objects:  # every object of the set, the multipart dumps and the manifest alike
        head = c.head_object(Bucket=LOCKED, Key=o["Key"])
        assert head["ObjectLockMode"] == "GOVERNANCE", o["Key"]
        assert abs((head["ObjectLockRetainUntilDate"] - soon).total_seconds()) < 600, o["Key"]
    # the lock is real: the stored version cannot be deleted
    head = c.head_object(Bucket=LOCKED, Key=objects[0]["Key"])
    with pytest.raises(c.exceptions.ClientError, match="AccessDenied"):
        c.delete_object(Bucket=LOCKED, Key=objects[0]["Key"], VersionId=head["VersionId"])

    # prune: the policy drops the older set, the lock keeps it (said so); nothing deleted, no failure half-way
    result, doc = cli.json("prune", "--dest", dest, "--keep-last", "1", "--yes", env=moto.env())
    assert result.exit_code == 0, doc["errors"]
    by_id = {d["backup_id"]: d for d in doc["data"]["decisions"]}
    assert by_id[ids[0]]["action"] == "keep" and by_id[ids[0]]["rule"] == "locked", by_id
    assert "Object Lock (governance) until" in by_id[ids[0]]["reason"]
    assert doc["data"]["deleted"] == []
    _, listed = cli.json("list", "--dest", dest, env=moto.env())
    assert [s["status"] for s in listed["data"]["sets"]] == ["complete", "complete"]


def test_lock_days_on_a_bucket_without_object_lock_is_refused_before_any_bgsave(lab, cli, moto):
    result, doc = backup(cli, moto, lab, f"s3://{PLAIN}/x", "--lock-days", "1")
    assert result.exit_code == 3 and "has no Object Lock" in doc["errors"][0], doc["errors"]
    assert not client(moto).list_objects_v2(Bucket=PLAIN).get("KeyCount")
    result, doc = backup(cli, moto, lab, f"s3://{PLAIN}/x", "--lock-days", "1", "--lock-mode", "forever")
    assert result.exit_code == 2 and "--lock-mode" in doc["errors"][0], doc["errors"]
    # without a lock, prune of the same store deletes as usual
    for _ in range(2):
        result, doc = backup(cli, moto, lab, f"s3://{PLAIN}/x")
        assert result.exit_code == 0, doc["errors"]
    result, doc = cli.json("prune", "--dest", f"s3://{PLAIN}/x", "--keep-last", "1", "--yes", env=moto.env())
    assert result.exit_code == 0 and len(doc["data"]["deleted"]) == 1, doc
