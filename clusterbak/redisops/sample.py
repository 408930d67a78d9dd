"""Read a few keys of every type from a cluster (the drill's proof that restored data reads back)."""

from __future__ import annotations

import random
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from clusterbak.redisops.connect import split_address

READERS = {
    "string": "GET",
    "hash": "HGETALL",
    "list": "LRANGE",
    "set": "SMEMBERS",
    "zset": "ZRANGE",
    "stream": "XRANGE",
}
EXTRA = {"LRANGE": (0, -1), "ZRANGE": (0, -1), "XRANGE": ("-", "+")}


def sample_keys(seed: str, per_type: int = 3, scan_limit: int = 3000) -> dict[str, dict[str, Any]]:
    """Read a few keys of every type found among the first `scan_limit` keys of each master (TYPE pipelined);
    a type is ok if all its reads succeed. Types the data does not have are simply absent."""
    host, port = split_address(seed)
    client = RedisCluster(startup_nodes=[ClusterNode(host, port)], socket_timeout=10)
    found: dict[str, list[bytes]] = {t: [] for t in READERS}
    try:
        for node in client.get_primaries():
            conn = client.get_redis_connection(node)
            keys = []
            for key in conn.scan_iter(count=1000):
                keys.append(key)
                if len(keys) >= scan_limit:
                    break
            pipe = conn.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            for key, kind in zip(keys, pipe.execute(), strict=True):
                kind = kind.decode() if isinstance(kind, bytes) else kind
                if kind in found and len(found[kind]) < per_type:
                    found[kind].append(key)
        out: dict[str, dict[str, Any]] = {}
        for kind, keys in found.items():
            if not keys:
                continue
            try:
                for key in random.sample(keys, len(keys)):
                    client.execute_command(READERS[kind], key, *EXTRA.get(READERS[kind], ()))
                out[kind] = {"ok": True, "read": len(keys)}
            except redis.RedisError as exc:
                out[kind] = {"ok": False, "read": 0, "error": str(exc)}
        return out
    finally:
        client.close()
