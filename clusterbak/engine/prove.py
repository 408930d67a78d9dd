"""Prove a restored cluster: cluster_state ok everywhere, the manifest's slot owners and roles, replicas in
sync, no open slots, and each master's DBSIZE within the manifest's count (keys with a TTL may be gone).
The reads are redisops/health.py's; this module judges them against the manifest."""

from __future__ import annotations

from collections.abc import Callable

from clusterbak.model.manifest import Manifest
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.health import key_count, read_topology, wait_cluster_ok


def prove(conn: ConnectionOptions, manifest: Manifest, new_address: dict[str, str], timeout: float,
          on_event: Callable[[str, dict], None] = lambda k, d: None) -> list[dict]:
    """Checks as rows {check, subject, ok, detail}. new_address: node id -> address now. `on_event("serving")`
    when every node is cluster_state ok with its replicas synced (a drill times the proof's parts)."""
    rows = []
    addresses = sorted(set(new_address.values()))
    ok = wait_cluster_ok(conn, addresses, timeout)
    on_event("serving", {"ok": ok})
    rows.append(_row("cluster_state ok and replicas synced", "all nodes", ok,
                     "" if ok else f"not within {timeout:.0f}s"))
    topo = read_topology(conn, addresses[0])
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
        size = key_count(conn, address)
        keys, expires = shard.keys, shard.expires
        rows.append(_row("key count", address, keys - expires <= size <= keys,
                         f"{size} keys; manifest {keys} of which {expires} had a TTL"))
    return rows


def _row(check: str, subject: str, ok: bool, detail: str) -> dict:
    return {"check": check, "subject": subject, "ok": bool(ok), "detail": detail}
