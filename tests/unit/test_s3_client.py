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
