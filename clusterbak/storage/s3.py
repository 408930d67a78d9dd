"""Backup sets in S3-compatible object storage: `s3://bucket/prefix` -> objects under <prefix>/<backup_id>/.

manifest.json is uploaded last and is the commit marker: a set without it is partial (list shows it; prune removes
it after the grace period). Each file is a multipart upload fed as it streams (part size x concurrency bounds the
memory); a failed or interrupted file's upload is aborted. Endpoint, region and credentials come from the standard
AWS chain (boto3: environment, ~/.aws/config profiles, AWS_ENDPOINT_URL) plus --s3-endpoint-url / path-style.
"""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

from clusterbak.errors import PreconditionError, StepFailed, UsageError
from clusterbak.model.manifest import BACKUP_ID, Manifest
from clusterbak.model.names import NameError_, check_relative_path
from clusterbak.storage.backupset import MANIFEST, MANIFEST_LIMIT, manifest_from_bytes
from clusterbak.storage.keys import SIGNATURE_SUFFIX, Signer, check_signature
from clusterbak.storage.repository import SetEntry, SetWriter, set_status
from clusterbak.storage.s3options import S3Options
from clusterbak.storage.stages import Encryption

BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MIN_PART = 5 * 1024 * 1024  # S3's smallest part (but the last)
STALL = 600.0  # seconds the writer waits for a part upload to free a buffer
DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "InvalidToken", "ExpiredToken"}
MISSING_BUCKET = {"NoSuchBucket", "404"}


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def s3_errors(what: str, precondition: bool = False):
    """botocore's errors as one line naming the object; exit 3 (precondition) for the preflight checks."""
    kind = PreconditionError if precondition else StepFailed
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = _code(exc)
        if code in DENIED:
            raise kind(f"{what}: the S3 service refused the credentials ({code}); check AWS_ACCESS_KEY_ID/"
                       "AWS_SECRET_ACCESS_KEY or the profile, and the bucket policy") from None
        if code in MISSING_BUCKET and precondition:
            raise kind(f"{what}: the bucket does not exist ({code}); create it or fix --dest") from None
        raise kind(f"{what}: {code or 'error'}: {exc.response.get('Error', {}).get('Message', exc)}") from None
    except botocore.exceptions.NoCredentialsError:
        raise kind(f"{what}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                   "AWS_PROFILE)") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise kind(f"{what}: {exc}") from None


class MultipartObject:
    """ObjectWriter: a multipart upload fed as bytes arrive. Parts are filled in place into a fixed pool of
    concurrency + 1 part-sized buffers (one filling, the others uploading), reused when a part is done: memory stays
    at part_size x (concurrency + 1) per file, with no allocation churn. close() completes the upload (a small object
    is one PUT); abort() aborts it."""

    def __init__(self, client, bucket: str, key: str, options: S3Options) -> None:
        self.client, self.bucket, self.key, self.options = client, bucket, key, options
        self.label = f"s3://{bucket}/{key}"
        self._size = max(MIN_PART, options.part_size)
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._made = 0
        self._cur: bytearray | None = None
        self._fill = 0
        self._upload_id: str | None = None
        self._parts: list[Future] = []
        self._pool: ThreadPoolExecutor | None = None
        self._state = "open"

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            if self._cur is None:
                self._cur, self._fill = self._take(), 0
            n = min(len(view), self._size - self._fill)
            self._cur[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self._size:
                self._send(self._cur, self._size)
                self._cur = None

    def _take(self) -> bytearray:
        if self._made < max(1, self.options.concurrency) + 1:
            self._made += 1
            return bytearray(self._size)
        deadline = time.monotonic() + STALL
        while time.monotonic() < deadline:
            self._raise_failed()
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                continue
        raise StepFailed(f"{self.label}: no part finished uploading in {STALL:.0f}s")

    def _raise_failed(self) -> None:
        for done in [f for f in self._parts if f.done()]:
            done.result()  # raise a failed part's error now, not at the end

    def _send(self, buf: bytearray, length: int) -> None:
        self._raise_failed()
        if self._upload_id is None:
            with s3_errors(f"{self.label}: starting the upload"):
                self._upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.options.concurrency), thread_name_prefix="s3-part")
        assert self._pool is not None  # made with the upload, above
        self._parts.append(self._pool.submit(self._upload_part, len(self._parts) + 1, buf, length))

    def _upload_part(self, number: int, buf: bytearray, length: int) -> dict:
        try:
            body = buf if length == len(buf) else bytes(memoryview(buf)[:length])  # only the last part is copied
            with s3_errors(f"{self.label}: uploading part {number}"):
                reply = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                                PartNumber=number, Body=body)
            return {"PartNumber": number, "ETag": reply["ETag"]}
        finally:
            self._free.put(buf)

    def close(self) -> None:
        try:
            if self._upload_id is None:
                with s3_errors(f"{self.label}: uploading"):
                    body = bytes(memoryview(self._cur)[:self._fill]) if self._cur is not None else b""
                    self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body)
            else:
                if self._cur is not None and self._fill:
                    self._send(self._cur, self._fill)
                self._cur = None
                parts = [f.result() for f in self._parts]
                with s3_errors(f"{self.label}: completing the upload"):
                    self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                                          MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort()
            raise
        finally:
            self._cur = None
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        self._state = "closed"

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        self._cur = None
        if self._pool is not None:
            for f in self._parts:
                f.cancel()
            self._pool.shutdown(wait=True)
        if self._upload_id is not None:
            try:  # best effort: a server that is gone leaves it to the bucket's lifecycle rule (docs/encryption.md)
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                pass


class S3StoredSet:
    def __init__(self, repo: S3Repository, backup_id: str, identities: tuple = ()) -> None:
        self.repo, self.backup_id, self.identities = repo, backup_id, identities
        self.where = repo.set_url(backup_id)
        self.local_dir: Path | None = None  # verify/drill results are not recorded beside an S3 set

    def label(self, relative: str) -> str:
        return f"{self.where}/{relative}"

    def size(self, relative: str) -> int | None:
        key = self.repo.key(self.backup_id, check_relative_path(relative))
        try:
            return int(self.repo.client.head_object(Bucket=self.repo.bucket, Key=key)["ContentLength"])
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            with s3_errors(self.label(relative)):
                raise

    def open(self, relative: str) -> Callable[[int], bytes]:
        label = self.label(relative)
        with s3_errors(label):
            body = self.repo.client.get_object(Bucket=self.repo.bucket,
                                               Key=self.repo.key(self.backup_id, check_relative_path(relative)))["Body"]

        ended: list[bool] = []

        def read(n: int) -> bytes:
            if ended:
                return b""
            with s3_errors(f"{label}: reading"):
                data = body.read(n)
            if not data:
                ended.append(True)
                body.close()
            return data

        return read


class S3Repository:
    def __init__(self, bucket: str, prefix: str, options: S3Options) -> None:
        self.bucket, self.prefix, self.options = bucket, prefix, options
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        # Checksums "when_required": botocore's default CRC32 trailers cost ~40% of the upload rate here (90 vs 149
        # MB/s on loopback); every object's sha256 is in the manifest and checked on every read, SigV4 signs the
        # payload hash over plain HTTP, and TLS carries it over HTTPS.
        config = botocore.config.Config(s3={"addressing_style": "path" if options.path_style else "auto"},
                                        request_checksum_calculation="when_required",
                                        response_checksum_validation="when_required",
                                        retries={"max_attempts": 3, "mode": "standard"},
                                        connect_timeout=10, read_timeout=60,
                                        max_pool_connections=max(10, 4 * options.concurrency))
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=options.endpoint_url or None,
                                     region_name=options.region or session.region_name or "us-east-1", config=config)

    @classmethod
    def from_url(cls, url: str, options: S3Options | None) -> S3Repository:
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if not BUCKET.fullmatch(bucket):
            raise UsageError(f"--dest {url}: {bucket!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
        if prefix:
            try:
                check_relative_path(prefix)
            except NameError_ as exc:
                raise UsageError(f"--dest {url}: the prefix is not a plain path: {exc}") from None
        return cls(bucket, prefix, options or S3Options())

    def key(self, backup_id: str, relative: str = "") -> str:
        parts = [p for p in (self.prefix, backup_id, relative) if p]
        return "/".join(parts)

    def set_url(self, backup_id: str) -> str:
        return f"s3://{self.bucket}/{self.key(backup_id)}"

    def check(self, writing: bool) -> None:
        with s3_errors(f"{self.url}", precondition=True):
            self.client.head_bucket(Bucket=self.bucket)
            if writing:  # a policy may allow HEAD but not writes: prove a write and a delete before any BGSAVE
                probe = self.key(".clusterbak-write-check")
                self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
                self.client.delete_object(Bucket=self.bucket, Key=probe)

    def begin(self, backup_id: str, encryption: Encryption | None = None, signer: Signer | None = None) -> SetWriter:
        with s3_errors(self.set_url(backup_id), precondition=True):
            reply = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(backup_id) + "/", MaxKeys=1)
        if reply.get("KeyCount", 0):
            raise PreconditionError(f"{self.set_url(backup_id)} already has objects; backup ids never overwrite")
        return SetWriter(backup_id, encryption, signer,
                         lambda rel: MultipartObject(self.client, self.bucket, self.key(backup_id, rel), self.options))

    def finalize(self, writer: SetWriter, manifest: dict) -> str:
        data, signature = writer.manifest_bytes(manifest)
        where = self.set_url(writer.backup_id)
        with s3_errors(f"{where}: writing the manifest"):
            if signature is not None:
                self.client.put_object(Bucket=self.bucket, Key=self.key(writer.backup_id, MANIFEST + SIGNATURE_SUFFIX),
                                       Body=signature)
            self.client.put_object(Bucket=self.bucket, Key=self.key(writer.backup_id, MANIFEST), Body=data)
        return where

    def discard(self, writer: SetWriter) -> None:
        """Best effort: delete what was uploaded. Left-overs (server gone) stay a partial set for prune."""
        try:
            self._delete_prefix(writer.backup_id)
        except StepFailed:
            pass

    def _objects(self, prefix: str) -> list[dict]:
        out = []
        with s3_errors(f"s3://{self.bucket}/{prefix}: listing"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                out.extend(page.get("Contents", []))
        return out

    def _delete_prefix(self, backup_id: str) -> None:
        keys = [o["Key"] for o in self._objects(self.key(backup_id) + "/")]
        manifest = self.key(backup_id, MANIFEST)
        with s3_errors(f"{self.set_url(backup_id)}: deleting"):
            if manifest in keys:  # the commit marker first: a half-deleted set is partial, never complete-looking
                self.client.delete_object(Bucket=self.bucket, Key=manifest)
            for key in keys:
                if key != manifest:
                    self.client.delete_object(Bucket=self.bucket, Key=key)

    def _get_small(self, backup_id: str, name: str, missing_ok: bool = False) -> bytes | None:
        key = self.key(backup_id, name)
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if missing_ok and _code(exc) in ("404", "NoSuchKey"):
                return None
            with s3_errors(f"s3://{self.bucket}/{key}"):
                raise
        with s3_errors(f"s3://{self.bucket}/{key}"):
            return reply["Body"].read(MANIFEST_LIMIT + 1)

    def manifest(self, backup_id: str, verify_key=None) -> Manifest:
        if not BACKUP_ID.fullmatch(backup_id):
            raise UsageError(f"{backup_id!r} is not a backup id (see `clusterbak list --dest {self.url}`)")
        data = self._get_small(backup_id, MANIFEST, missing_ok=True)
        if data is None:
            if self._objects(self.key(backup_id) + "/"):
                raise PreconditionError(f"backup {backup_id} in {self.url} is partial (never completed)")
            raise UsageError(f"no complete backup {backup_id!r} in {self.url}; `clusterbak list --dest {self.url}`")
        if verify_key is not None:
            check_signature(verify_key, data, self._get_small(backup_id, MANIFEST + SIGNATURE_SUFFIX, True),
                            self.set_url(backup_id))
        return manifest_from_bytes(data, self.set_url(backup_id), backup_id)

    def open_set(self, backup_id: str, identities: tuple = ()) -> S3StoredSet:
        self.manifest(backup_id)  # complete, or the same clear error as everywhere
        return S3StoredSet(self, backup_id, identities)

    def entries(self) -> list[SetEntry]:
        base = self.key("") + "/" if self.prefix else ""
        groups: dict[str, list[dict]] = {}
        for obj in self._objects(base):
            backup_id = obj["Key"][len(base):].split("/", 1)[0]
            if BACKUP_ID.fullmatch(backup_id) and "/" in obj["Key"][len(base):]:
                groups.setdefault(backup_id, []).append(obj)
        out = []
        for backup_id, objs in sorted(groups.items()):
            size = sum(int(o["Size"]) for o in objs)
            newest = max(o["LastModified"].timestamp() for o in objs)
            where = self.set_url(backup_id)
            if not any(o["Key"] == self.key(backup_id, MANIFEST) for o in objs):
                out.append(SetEntry(backup_id, where, "partial", newest, size, None, None))
                continue
            try:
                m = self.manifest(backup_id)
                keys = {o["Key"] for o in objs}
                status, problem = set_status(m, lambda rel, prefix=backup_id, keys=keys: self.key(prefix, rel) in keys)
                out.append(SetEntry(backup_id, where, status, m.created_at_unix, size, len(m.shards), m.kind,
                                    problem))
            except (StepFailed, UsageError) as exc:
                out.append(SetEntry(backup_id, where, "damaged", newest, size, None, None,
                                    str(exc).replace(where + "/", "")))
        return sorted(out, key=lambda e: e.created_at)

    def delete(self, entry: SetEntry) -> None:
        if entry.path != self.set_url(entry.backup_id):
            raise StepFailed(f"refusing to delete {entry.path}: not a set of {self.url}")
        self._delete_prefix(entry.backup_id)
