"""Fleet fixtures: the per-version images (scripts/build-images.sh, cached) and fleets of one host per node.

A pytest plugin (tests/conftest.py lists it): fleet_images is a fixture; start_fleet, digests etc. are imported.

Everything a fleet makes carries org.clusterbak.test-run=$CLUSTERBAK_TEST_RUN beside its own lab label, so
scripts/test.sh removes it even after a crash; each test removes its own fleet in a finally.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from clusterbak.lab import fleet as fl
from clusterbak.lab.load import load as load_keys

from .conftest_docker import RUN, RUN_LABEL

# server version -> the RDB version its dump.rdb carries (checked on the real files by the matrix)
RDB_OF = {"redis-6.0": 9, "redis-7.0": 10, "valkey-8.0": 11, "redis-8.0": 12, "valkey-8.1": 11}


@pytest.fixture(scope="session")
def fleet_images(docker_client) -> dict[str, str]:
    """version -> image; $CLUSTERBAK_FLEET_IMAGES (\"v=image,...\", set by scripts/test.sh) or built now."""
    given = os.environ.get("CLUSTERBAK_FLEET_IMAGES")
    if given:
        images = dict(item.split("=", 1) for item in given.split(",") if "=" in item)
    else:
        images = fl.build_images()
    for image in images.values():
        docker_client.images.get(image)  # raises ImageNotFound loudly if the script lied
    return images


@contextmanager
def start_fleet(root: Path, version: str, images: dict[str, str], keys: int = 0, masters: int = 3,
                replicas: int = 1) -> Iterator[fl.Fleet]:
    fleet = fl.up(root, version, masters, replicas, image=images[version], name_prefix=f"clusterbak-test-{RUN}",
                  extra_labels={RUN_LABEL: RUN})
    try:
        if keys:
            load_keys(fleet.nodes[0].ip, fl.PORT, keys)  # mixed kinds, every 10th key with a TTL
        yield fleet
    finally:
        fl.down(root)


def masters_of(fleet: fl.Fleet) -> list[str]:
    out = []
    for node in fleet.nodes:
        c = redis.Redis(host=node.ip, port=fl.PORT, decode_responses=True, socket_timeout=5)
        try:
            if c.info("replication")["role"] == "master":
                out.append(node.address)
        finally:
            c.close()
    return out


def digests(fleet: fl.Fleet) -> dict[str, tuple[str, int]]:
    """master address -> (DEBUG DIGEST, DBSIZE), read now."""
    out = {}
    for address in masters_of(fleet):
        host = address.rsplit(":", 1)[0]
        c = redis.Redis(host=host, port=fl.PORT, decode_responses=True, socket_timeout=10)
        try:
            out[address] = (c.execute_command("DEBUG", "DIGEST"), c.dbsize())
        finally:
            c.close()
    return out


def node_client(address: str) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), decode_responses=True, socket_timeout=10)
