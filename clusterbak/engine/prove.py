"""Prove a restored cluster: cluster_state ok everywhere, the manifest's slot owners and roles, replicas in
sync, no open slots, and each master's DBSIZE within the manifest's count (keys with a TTL may be gone)."""

from __future__ import annotations

import time

import redis

from clusterbak.model.manifest import Manifest
from clusterbak.model.topology import parse_cluster_nodes
from clusterbak.redisops.connect import ConnectionOptions, make_client


def _client(conn: ConnectionOptions, address: str) -> redis.Redis:
    host, port = address.rsplit(":", 1)
    return make_client(conn, host, int(port))


def wait_cluster_ok(conn: ConnectionOptions, addresses: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(_cluster_ok(conn, a) for a in addresses):
                return True
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.2)
    return False


def _cluster_ok(conn: ConnectionOptions, address: str) -> bool:
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


def prove(conn: ConnectionOptions, manifest: Manifest, new_address: dict[str, str], timeout: float) -> list[dict]:
    """Checks as rows {check, subject, ok, detail}. new_address: node id -> address now."""
    rows = []
    addresses = sorted(set(new_address.values()))
    ok = wait_cluster_ok(conn, addresses, timeout)
    rows.append(_row("cluster_state ok and replicas synced", "all nodes", ok,
                     "" if ok else f"not within {timeout:.0f}s"))
    seed = addresses[0]
    client = _client(conn, seed)
    try:
        topo = parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))
    finally:
        client.close()
    rows.append(_row("all 16384 slots served", "cluster", not topo.uncovered_slots(),
                     ", ".join(str(r) for r in topo.uncovered_slots()[:3])))
    rows.append(_row("no open slots", "cluster", not topo.open_slots(), ""))
    for node in manifest.nodes:
        if node.id not in new_address:
            continue
        try:
            now = topo.by_id(node.id)
        except KeyError:
            rows.append(_row("node present", new_address[node.id], False, f"node id {node.id[:8]} missing"))
            continue
        same = now.role == node.role and (now.master_id or None) == (node.master_id or None)
        rows.append(_row("same role", now.address, same, f"{node.role} -> {now.role}"))
        if node.role == "master":
            want = list(node.slots)
            have = [str(r) for r in now.slots]
            rows.append(_row("same slots", now.address, want == have, f"{' '.join(want)} vs {' '.join(have)}"))
    for shard in manifest.shards:
        address = new_address.get(shard.master_id)
        if address is None:
            continue
        client = _client(conn, address)
        try:
            size = int(client.dbsize())
        finally:
            client.close()
        keys, expires = shard.keys, shard.expires
        rows.append(_row("key count", address, keys - expires <= size <= keys,
                         f"{size} keys; manifest {keys} of which {expires} had a TTL"))
    return rows


def _row(check: str, subject: str, ok: bool, detail: str) -> dict:
    return {"check": check, "subject": subject, "ok": bool(ok), "detail": detail}
