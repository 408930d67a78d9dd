"""Backup sets in S3-compatible object storage: `s3://bucket/prefix` -> objects under <prefix>/<backup_id>/.

manifest.json is uploaded last and is the commit marker: a set without it is partial (list shows it; prune removes
it after the grace period). Each file is a multipart upload fed as it streams (part size x concurrency bounds the
memory); a failed or interrupted file's upload is aborted. Endpoint, region and credentials come from the standard
AWS chain (boto3: environment, ~/.aws/config profiles, AWS_ENDPOINT_URL) plus --s3-endpoint-url / path-style.
"""

from __future__ import annotations

import datetime
import io
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import boto3
import botocore.config
import botocore.exceptions

from clusterbak.errors import PreconditionError, StepFailed, UsageError
from clusterbak.model.manifest import BACKUP_ID, Manifest
from clusterbak.model.names import check_relative_path
from clusterbak.storage.backupset import MANIFEST, MANIFEST_LIMIT, manifest_from_bytes
from clusterbak.storage.keys import SIGNATURE_SUFFIX, Signer, check_signature
from clusterbak.storage.records import RECORD_LIMIT, VERIFY_FILE, parse_verify
from clusterbak.storage.repository import SetEntry, SetWriter, set_status
from clusterbak.storage.s3options import S3Options, parse_s3_url
from clusterbak.storage.stages import Encryption

MIN_PART = 5 * 1024 * 1024  # S3's smallest part (but the last)
SMALL = 256 * 1024  # objects up to this size are held in their own small buffer and sent with one PUT
GROW_EVERY = 2000  # parts: then the part size doubles (5 MiB parts: 10 GB, then 20 GB more, ...; S3 allows 10000)
MAX_PART = 512 * 1024 * 1024
STALL = 600.0  # seconds the writer waits for a part upload to free a buffer
DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "InvalidToken", "ExpiredToken"}
MISSING_BUCKET = {"NoSuchBucket", "404"}


def _lock_args(lock: dict | None) -> dict:
    """Object Lock headers of one upload; S3 wants a checksum header on any upload that carries them."""
    return {**lock, "ChecksumAlgorithm": "CRC32"} if lock else {}


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


class PartBuffers:
    """Part-sized buffers a set's files hand on to each other: a file that is done gives its buffers back and the
    next file takes them, so a backup allocates part_size x (concurrency + 1) x (files at once) once, instead of
    fresh buffers per file (freed 8 MiB blocks fragment the heap: RSS grew with every shard)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._spare: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            if self._spare:
                return self._spare.pop()
        return bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        if len(buf) == self.size:
            with self._lock:
                self._spare.append(buf)


class _View(io.RawIOBase):
    """A request body over part of a buffer, without copying it (botocore reads, seeks and rewinds it)."""

    def __init__(self, view: memoryview) -> None:
        self._view, self._pos = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = max(0, min(len(b), len(self._view) - self._pos))
        b[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


class MultipartObject:
    """ObjectWriter: a multipart upload fed as bytes arrive. Parts are filled in place into at most
    concurrency + 1 part-sized buffers (one filling, the others uploading), reused when a part is done and handed
    on to the set's next file (PartBuffers): memory stays at part_size x (concurrency + 1) per file in flight, with
    no allocation churn. close() completes the upload (a small object is one PUT); abort() aborts it."""

    def __init__(self, client, bucket: str, key: str, options: S3Options, buffers: PartBuffers | None = None,
                 lock: dict | None = None) -> None:
        self.client, self.bucket, self.key, self.options, self.lock = client, bucket, key, options, lock
        self.label = f"s3://{bucket}/{key}"
        self._size = max(MIN_PART, options.part_size)
        self._buffers = buffers if buffers is not None and buffers.size == self._size else PartBuffers(self._size)
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._head: bytearray | None = bytearray()  # the first bytes, until the object is bigger than SMALL
        self._made = 0
        self._cur: bytearray | None = None
        self._fill = 0
        self._upload_id: str | None = None
        self._parts: list[Future] = []
        self._pool: ThreadPoolExecutor | None = None
        self._state = "open"

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        if self._head is not None:  # a small object (nodes.conf, a config file) never takes a part buffer
            if len(self._head) + len(view) <= SMALL:
                self._head += view
                return
            head, self._head = self._head, None
            self._fill_parts(memoryview(head))
        self._fill_parts(view)

    def _fill_parts(self, view: memoryview) -> None:
        while len(view):
            if self._cur is None:
                self._cur, self._fill = self._take(), 0
            n = min(len(view), len(self._cur) - self._fill)
            self._cur[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == len(self._cur):
                self._send(self._cur, self._fill)
                self._cur = None

    def _take(self) -> bytearray:
        if len(self._parts) and len(self._parts) % GROW_EVERY == 0 and self._size < MAX_PART:
            self._size = min(MAX_PART, self._size * 2)  # S3 allows 10000 parts: bigger parts for a big file
        while True:
            if self._made < max(1, self.options.concurrency) + 1:
                self._made += 1
                return self._buffers.take() if self._size == self._buffers.size else bytearray(self._size)
            buf = self._wait_free()
            if len(buf) == self._size:
                return buf
            self._made -= 1  # a buffer of the size before the growth: dropped, a bigger one is made

    def _wait_free(self) -> bytearray:
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
                self._upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                                      **_lock_args(self.lock))["UploadId"]
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.options.concurrency), thread_name_prefix="s3-part")
        assert self._pool is not None  # made with the upload, above
        self._parts.append(self._pool.submit(self._upload_part, len(self._parts) + 1, buf, length))

    def _upload_part(self, number: int, buf: bytearray, length: int) -> dict:
        try:
            body = buf if length == len(buf) else _View(memoryview(buf)[:length])  # the last part: not copied
            with s3_errors(f"{self.label}: uploading part {number}"):
                reply = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                                PartNumber=number, Body=body,
                                                **({"ChecksumAlgorithm": "CRC32"} if self.lock else {}))
            return {"PartNumber": number, "ETag": reply["ETag"],
                    **({"ChecksumCRC32": reply["ChecksumCRC32"]} if "ChecksumCRC32" in reply else {})}
        finally:
            self._free.put(buf)

    def close(self) -> None:
        try:
            if self._upload_id is None:
                with s3_errors(f"{self.label}: uploading"):
                    body: bytearray | bytes | _View
                    if self._head is not None:
                        body = self._head
                    else:
                        body = _View(memoryview(self._cur)[:self._fill]) if self._cur is not None else b""
                    self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **_lock_args(self.lock))
            else:
                if self._cur is not None and self._fill:
                    self._send(self._cur, self._fill)
                self._cur = None
                parts = [f.result() for f in self._parts]
                with s3_errors(f"{self.label}: completing the upload"):
                    self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                                          MultipartUpload={"Parts": parts})
                if self.lock:  # set again on the object: some S3-compatible stores ignore it on a multipart start
                    with s3_errors(f"{self.label}: setting its Object Lock retention"):
                        self.client.put_object_retention(Bucket=self.bucket, Key=self.key, Retention={
                            "Mode": self.lock["ObjectLockMode"],
                            "RetainUntilDate": self.lock["ObjectLockRetainUntilDate"]})
        except BaseException:
            self.abort()
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._release()
        self._state = "closed"

    def _release(self) -> None:
        """Every part is done (uploaded, failed or cancelled): the buffers go on to the set's next file."""
        if self._cur is not None:
            self._buffers.give(self._cur)
            self._cur = None
        while True:
            try:
                self._buffers.give(self._free.get_nowait())
            except queue.Empty:
                return

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        if self._pool is not None:
            for f in self._parts:
                f.cancel()
            self._pool.shutdown(wait=True)
        self._release()
        if self._upload_id is not None:
            try:  # best effort: a server that is gone leaves it to the bucket's lifecycle rule (docs/object-storage.md)
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                pass


class S3StoredSet:
    def __init__(self, repo: S3Repository, backup_id: str, identities: tuple = ()) -> None:
        self.repo, self.backup_id, self.identities = repo, backup_id, identities
        self.where = repo.set_url(backup_id)
        self.local_dir = None

    def write_record(self, name: str, data: bytes) -> str:
        """verify.json / drill.json: one PUT beside the manifest (S3 replaces an object whole, never half)."""
        label = self.label(check_relative_path(name))
        with s3_errors(f"{label}: recording the result"):
            self.repo.client.put_object(Bucket=self.repo.bucket, Key=self.repo.key(self.backup_id, name), Body=data)
        return label

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
        self.client = _client(options)

    @classmethod
    def from_url(cls, url: str, options: S3Options | None) -> S3Repository:
        bucket, prefix = parse_s3_url(url)
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
        if writing and self.options.lock_days:
            self._check_lock_enabled()

    def _check_lock_enabled(self) -> None:
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
            enabled = config.get("ObjectLockEnabled") == "Enabled"
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in DENIED:
                with s3_errors(self.url, precondition=True):
                    raise
            enabled = False
        except botocore.exceptions.BotoCoreError as exc:
            raise PreconditionError(f"{self.url}: {exc}") from None
        if not enabled:
            raise PreconditionError(f"--lock-days: bucket {self.bucket} has no Object Lock; create the bucket with "
                                    "Object Lock enabled (it cannot be turned on for a bucket with objects in some "
                                    "stores), or drop --lock-days")

    def lock_args(self) -> dict | None:
        """The Object Lock of a set begun now: mode and retain-until, the same for all of its objects."""
        if not self.options.lock_days:
            return None
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=self.options.lock_days)
        return {"ObjectLockMode": self.options.lock_mode.upper(), "ObjectLockRetainUntilDate": until}

    def lock_of(self, entry: SetEntry) -> str | None:
        """Why prune must keep this set: its objects are under an Object Lock retention that has not ended
        (asked of the manifest, uploaded last, or of a partial set's newest object); None when it may go."""
        objs = self._objects(self.key(entry.backup_id) + "/")
        if not objs:
            return None
        manifest = self.key(entry.backup_id, MANIFEST)
        key = manifest if any(o["Key"] == manifest for o in objs) else max(objs, key=lambda o: o["LastModified"])["Key"]
        with s3_errors(f"s3://{self.bucket}/{key}"):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        until = head.get("ObjectLockRetainUntilDate")
        if until is None or until <= datetime.datetime.now(datetime.UTC):
            return None
        return f"Object Lock ({str(head.get('ObjectLockMode', '')).lower()}) until {until:%Y-%m-%dT%H:%M:%SZ}"

    def begin(self, backup_id: str, encryption: Encryption | None = None, signer: Signer | None = None) -> SetWriter:
        with s3_errors(self.set_url(backup_id), precondition=True):
            reply = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(backup_id) + "/", MaxKeys=1)
        if reply.get("KeyCount", 0):
            raise PreconditionError(f"{self.set_url(backup_id)} already has objects; backup ids never overwrite")
        buffers = PartBuffers(max(MIN_PART, self.options.part_size))  # shared by the set's files, one after another
        lock = self.lock_args()
        return SetWriter(backup_id, encryption, signer,
                         lambda rel: MultipartObject(self.client, self.bucket, self.key(backup_id, rel), self.options,
                                                     buffers, lock), lock=lock)

    def finalize(self, writer: SetWriter, manifest: dict) -> str:
        data, signature = writer.manifest_bytes(manifest)
        where = self.set_url(writer.backup_id)
        with s3_errors(f"{where}: writing the manifest"):
            lock = _lock_args(writer.lock)
            if signature is not None:
                self.client.put_object(Bucket=self.bucket, Key=self.key(writer.backup_id, MANIFEST + SIGNATURE_SUFFIX),
                                       Body=signature, **lock)
            self.client.put_object(Bucket=self.bucket, Key=self.key(writer.backup_id, MANIFEST), Body=data, **lock)
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

    def read_record(self, backup_id: str, name: str) -> bytes | None:
        if not BACKUP_ID.fullmatch(backup_id):
            return None
        data = self._get_small(backup_id, check_relative_path(name), missing_ok=True)
        return None if data is None or len(data) > RECORD_LIMIT else data

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
                status, problem = set_status(m, lambda rel, bid=backup_id, keys=keys: self.key(bid, rel) in keys)
                verified, verified_at = "never", None
                if self.key(backup_id, VERIFY_FILE) in keys:  # asked only when the listing shows one
                    record = parse_verify(self.read_record(backup_id, VERIFY_FILE))
                    if record is not None:
                        verified, verified_at = ("ok" if record["ok"] else "failed"), float(record["verified_at"])
                out.append(SetEntry(backup_id, where, status, m.created_at_unix, size, len(m.shards), m.kind,
                                    problem, verified, verified_at))
            except (StepFailed, UsageError) as exc:
                out.append(SetEntry(backup_id, where, "damaged", newest, size, None, None,
                                    str(exc).replace(where + "/", "")))
        return sorted(out, key=lambda e: e.created_at)

    def delete(self, entry: SetEntry) -> None:
        if entry.path != self.set_url(entry.backup_id):
            raise StepFailed(f"refusing to delete {entry.path}: not a set of {self.url}")
        self._delete_prefix(entry.backup_id)


_CLIENTS: dict[tuple, object] = {}  # at most one: the client of the last options and AWS environment asked for
_CLIENTS_LOCK = threading.Lock()


def _client(options: S3Options):
    """One boto3 client per process for the same options and AWS environment: the CLI checks the bucket with it and
    the engine's run uploads with it (a second client would load botocore's service models again: ~0.1-0.25 s on
    the way to the first BGSAVE). boto3 clients are thread-safe. A changed AWS_* variable (credentials, profile,
    endpoint, region) or HOME (~/.aws) makes a new one."""
    key = (options.endpoint_url, options.path_style, options.region, options.concurrency,
           tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_") or k == "HOME")))
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS.clear()
            _CLIENTS[key] = _new_client(options)
        return _CLIENTS[key]


def _new_client(options: S3Options):
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
    return session.client("s3", endpoint_url=options.endpoint_url or None,
                          region_name=options.region or session.region_name or "us-east-1", config=config)
