"""How to reach S3-compatible storage: its own module so commands that never touch S3 do not import boto3."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class S3Options:
    endpoint_url: str | None = None
    path_style: bool = False
    region: str | None = None
    part_size: int = 8 * 1024 * 1024
    concurrency: int = 2  # parts in flight per file: memory = part_size x (concurrency + 1) per file (one filling)
