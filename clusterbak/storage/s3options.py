"""How to reach S3-compatible storage: its own module so commands that never touch S3 do not import boto3."""

from __future__ import annotations

from dataclasses import dataclass

LOCK_MODES = ("governance", "compliance")


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None
    path_style: bool = False
    region: str | None = None
    part_size: int = 5 * 1024 * 1024  # S3's minimum; grows for big files (GROW_EVERY)
    concurrency: int = 2  # parts in flight per file: memory = part_size x (concurrency + 1) per file (one filling)
    lock_days: int = 0  # S3 Object Lock retention of every object a backup writes (0: none)
    lock_mode: str = "governance"  # governance | compliance
