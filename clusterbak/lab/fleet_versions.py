"""The server versions the fleet lab builds images for (scripts/build-images.sh): `lab up --fleet --version`'s
choices, checked by typer. A module of its own so the CLI names them without importing the Docker SDK."""

from __future__ import annotations

from enum import StrEnum


class FleetVersion(StrEnum):
    REDIS_6_0 = "redis-6.0"
    REDIS_7_0 = "redis-7.0"
    VALKEY_8_0 = "valkey-8.0"
    REDIS_8_0 = "redis-8.0"
    VALKEY_8_1 = "valkey-8.1"
