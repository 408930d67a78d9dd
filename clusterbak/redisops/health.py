"""Read-only looks at a (restored) cluster: is every node serving, what topology does a node see, how many keys does
a master hold. Used by engine/prove.py, which judges what these return against the manifest."""

from __future__ import annotations

import time

import redis

from clusterbak.model.topology import Topology, parse_cluster_nodes
from clusterbak.redisops.connect import ConnectionOptions, make_client, split_address


def _client(conn: ConnectionOptions, address: str) -> redis.Redis:
    host, port = split_address(address)
    return make_client(conn, host, port)


def node_serving(conn: ConnectionOptions, address: str) -> bool:
    """cluster_state:ok; a replica linked and not in a full sync, a master not loading."""
    client = _client(conn, address)
    try:
        info = client.execute_command("CLUSTER", "INFO")
        if "cluster_state:ok" not in info:
            return False
        repl = client.info("replication")
        if repl.get("role") == "slave":
            return repl.get("master_link_status") == "up" and not int(repl.get("master_sync_in_progress", 0))
        return not int(client.info("persistence").get("loading", 0))
    finally:
        client.close()


def wait_cluster_ok(conn: ConnectionOptions, addresses: list[str], timeout: float) -> bool:
    """Every node serving (node_serving) within `timeout` seconds; a node not answering yet is polled again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(node_serving(conn, a) for a in addresses):
                return True
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.2)
    return False


def read_topology(conn: ConnectionOptions, address: str) -> Topology:
    """The cluster as `address` sees it (its CLUSTER NODES)."""
    client = _client(conn, address)
    try:
        return parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))
    finally:
        client.close()


def key_count(conn: ConnectionOptions, address: str) -> int:
    """DBSIZE of one node."""
    client = _client(conn, address)
    try:
        return int(client.dbsize())
    finally:
        client.close()
