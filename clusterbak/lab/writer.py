"""A client that keeps writing while the cluster is operated on, and remembers every acknowledged write.

Used by the rolling-restart tests and benchmark: redis-py RedisCluster (follows MOVED, refreshes its slot map
and retries connection errors) plus an application retry budget per write. A write is *acknowledged* when SET
returned OK; a write *failed* when its error outlived the budget. `missing()` reads every acknowledged key back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

STALL_S = 0.1  # a gap between two acknowledged writes longer than this counts as unavailability


def cluster_client(host: str, port: int, socket_timeout: float = 5.0) -> RedisCluster:
    """Every member as a startup node, so the slot map can be re-read while the seed itself is down."""
    first = RedisCluster(startup_nodes=[ClusterNode(host, port)], socket_timeout=socket_timeout)
    members = [ClusterNode(n.host, n.port) for n in first.get_nodes()]
    first.close()
    return RedisCluster(startup_nodes=members, socket_timeout=socket_timeout, socket_connect_timeout=1.0,
                        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 8))


@dataclass
class WriterStats:
    name: str
    acked: int = 0
    absorbed: int = 0  # errors that a retry got past
    failed: list[str] = field(default_factory=list)  # errors that outlived the retry budget
    max_gap_s: float = 0.0  # longest time between two acknowledged writes
    stalled_s: float = 0.0  # sum of the gaps longer than STALL_S


class Writer(threading.Thread):
    """SET {name}:{n} <n> in a loop; with `slots`, only keys whose slot it accepts (one writer per shard)."""

    def __init__(self, host: str, port: int, name: str = "w", slots: Callable[[int], bool] | None = None,
                 budget_s: float = 15.0, pause_s: float = 0.001) -> None:
        super().__init__(name=f"writer-{name}", daemon=True)
        self.host, self.port, self.key_prefix, self.slots = host, port, name, slots
        self.budget_s, self.pause_s = budget_s, pause_s
        self.acked: dict[str, str] = {}
        self.stats = WriterStats(name)
        self._halt = threading.Event()
        self._last_ack: float | None = None

    def _keys(self):
        n = 0
        while True:
            n += 1
            key = f"{self.key_prefix}:{n}"
            if self.slots is None or self.slots(key_slot(key.encode())):
                yield key, str(n)

    def run(self) -> None:
        client = cluster_client(self.host, self.port)
        try:
            for key, value in self._keys():
                if self._halt.is_set():
                    return
                self._write(client, key, value)
                time.sleep(self.pause_s)
        finally:
            client.close()

    def _write(self, client: RedisCluster, key: str, value: str) -> None:
        deadline = time.monotonic() + self.budget_s
        while True:
            try:
                client.set(key, value)
                break
            except (redis.RedisError, RedisClusterException, OSError) as exc:  # not all are RedisErrors
                if time.monotonic() > deadline or self._halt.is_set():
                    self.stats.failed.append(f"{key}: {type(exc).__name__}: {exc}")
                    return
                self.stats.absorbed += 1
                time.sleep(0.05)
        now = time.monotonic()
        if self._last_ack is not None:
            gap = now - self._last_ack
            self.stats.max_gap_s = max(self.stats.max_gap_s, gap)
            if gap > STALL_S:
                self.stats.stalled_s += gap
        self._last_ack = now
        self.acked[key] = value
        self.stats.acked += 1

    def finish(self, timeout: float = 30.0) -> WriterStats:
        self._halt.set()
        self.join(timeout)
        return self.stats


def missing(host: str, port: int, acked: dict[str, str], batch: int = 500) -> list[str]:
    """Acknowledged keys that are not there (or hold another value) now."""
    client = cluster_client(host, port)
    try:
        keys, lost = list(acked), []
        for i in range(0, len(keys), batch):
            chunk = keys[i : i + batch]
            for key, value in zip(chunk, client.mget_nonatomic(chunk), strict=True):
                if value is None or value.decode() != acked[key]:
                    lost.append(key)
        return lost
    finally:
        client.close()


def shard_slot_filter(ranges: list[tuple[int, int]]) -> Callable[[int], bool]:
    return lambda slot: any(a <= slot <= b for a, b in ranges)
