"""How to reach S3-compatible storage: its own module so commands that never touch S3 do not import boto3."""

from __future__ import annotations

import re
from dataclasses import dataclass

from clusterbak.errors import UsageError
from clusterbak.model.names import NameError_, check_relative_path

LOCK_MODES = ("governance", "compliance")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None
    path_style: bool = False
    region: str | None = None
    part_size: int = 5 * 1024 * 1024  # S3's minimum; grows for big files (GROW_EVERY)
    concurrency: int = 2  # parts in flight per file: memory = part_size x (concurrency + 1) per file (one filling)
    lock_days: int = 0  # S3 Object Lock retention of every object a backup writes (0: none)
    lock_mode: str = "governance"  # governance | compliance


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix), or a UsageError naming what is wrong; imports no boto3, so a
    command can refuse a bad --dest before it connects to anything."""
    bucket, _, prefix = url[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not BUCKET.fullmatch(bucket):
        raise UsageError(f"--dest {url}: {bucket!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
    if prefix:
        try:
            check_relative_path(prefix)
        except NameError_ as exc:
            raise UsageError(f"--dest {url}: the prefix is not a plain path: {exc}") from None
    return bucket, prefix
