"""Fill a lab cluster with mixed data: strings, hashes, lists, sets, sorted sets, streams, some TTLs."""

from __future__ import annotations

import random
from dataclasses import dataclass

from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from clusterbak.errors import PreconditionError
from clusterbak.redisops.connect import split_address

KINDS = ("string", "hash", "list", "set", "zset", "stream")


@dataclass(frozen=True, slots=True)
class LoadResult:
    keys: int
    with_ttl: int
    by_kind: tuple[tuple[str, int], ...]


def load_lab(address: str, keys: int, value_size: int = 32) -> LoadResult:
    """`clusterbak lab load`: `load` through one node, a node that is not a reachable cluster node refused."""
    host, port = split_address(address)
    try:
        return load(host, port, keys, value_size)
    except RedisClusterException as exc:
        raise PreconditionError(f"{address} is not a reachable Redis Cluster node ({exc}); lab load fills a "
                                "cluster: pass --seed of a cluster node") from None


def load(seed_host: str, seed_port: int, keys: int, value_size: int = 32, ttl_every: int = 10,
         prefix: str = "lab", seed: int = 7, password: str | None = None, username: str | None = None) -> LoadResult:
    rng = random.Random(seed)
    client = RedisCluster(startup_nodes=[ClusterNode(seed_host, seed_port)], password=password,
                          username=username, socket_timeout=30)
    counts = {k: 0 for k in KINDS}
    with_ttl = 0
    try:
        batch = client.pipeline(transaction=False)
        for i in range(keys):
            kind = KINDS[i % len(KINDS)]
            key = f"{prefix}:{kind}:{i}"
            value = rng.randbytes(value_size)
            _write(batch, kind, key, value, i)
            if ttl_every and i % ttl_every == 0:
                batch.expire(key, 3600 + i % 600)
                with_ttl += 1
            counts[kind] += 1
            if i % 500 == 499:
                batch.execute()
        batch.execute()
    finally:
        client.close()
    return LoadResult(keys, with_ttl, tuple(counts.items()))


def _write(pipe, kind: str, key: str, value: bytes, i: int) -> None:
    if kind == "string":
        pipe.set(key, value)
    elif kind == "hash":
        pipe.hset(key, mapping={"f1": value, "f2": str(i), "f3": value[::-1]})
    elif kind == "list":
        pipe.rpush(key, value, str(i), value[:4])
    elif kind == "set":
        pipe.sadd(key, value, str(i), "member")
    elif kind == "zset":
        pipe.zadd(key, {value: i, str(i): i / 2, "z": -1})
    else:
        pipe.xadd(key, {"v": value, "i": str(i)})
