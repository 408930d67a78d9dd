"""S3Repository's boto3 client: made once per process for the same options and AWS environment (no server needed:
making a client does not connect)."""

from __future__ import annotations

from clusterbak.storage.s3 import S3Repository
from clusterbak.storage.s3options import S3Options


def test_the_check_and_the_run_share_one_client_until_the_aws_environment_changes(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "one")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-one")
    options = S3Options(endpoint_url="http://127.0.0.1:9")
    checked = S3Repository.from_url("s3://bucket-a/prefix", options)  # the CLI's, for the preflight check
    running = S3Repository.from_url("s3://bucket-a/prefix", options)  # the engine's, for the uploads
    assert running.client is checked.client

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-two")
    changed = S3Repository.from_url("s3://bucket-a/prefix", options)
    assert changed.client is not checked.client
    assert changed.client._request_signer._credentials.secret_key == "secret-two"
    other = S3Repository.from_url("s3://bucket-a/prefix", S3Options(endpoint_url="http://127.0.0.1:10"))
    assert other.client is not changed.client


def test_backup_opens_an_s3_repository_while_it_reads_the_cluster(monkeypatch):
    """boto3's import, its models and the bucket check (~0.3-0.6 s) overlap the cluster reads; the check's refusal
    still reaches the caller (exit 3) when it asks for the repository, and a bad URL is refused at once."""
    import threading
    import time

    import pytest

    from clusterbak.cli import repo_opts
    from clusterbak.errors import PreconditionError, UsageError

    gate = threading.Event()
    seen = {}

    def slow_repository(dest, *args, **kwargs):
        seen["thread"] = threading.current_thread().name
        gate.wait(5)
        if "missing" in dest:
            raise PreconditionError(f"{dest}: the bucket does not exist")
        return dest

    monkeypatch.setattr(repo_opts, "repository", slow_repository)
    t0 = time.monotonic()
    soon = repo_opts.repository_soon("s3://bucket-a/prefix", None, False, writing=True)
    missing = repo_opts.repository_soon("s3://missing-bucket/prefix", None, False, writing=True)
    assert time.monotonic() - t0 < 1  # returned before the (held) check finished
    gate.set()
    assert soon() == "s3://bucket-a/prefix" and seen["thread"] == "s3-open"
    with pytest.raises(PreconditionError, match="does not exist"):
        missing()
    with pytest.raises(UsageError, match="not an S3 bucket name"):
        repo_opts.repository_soon("s3://Bad_Bucket/x", None, False)
