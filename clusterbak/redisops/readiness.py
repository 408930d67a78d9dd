"""Watch restarted nodes become ready, to split a drill's RTO into what Redis itself costs.

Two moments per node: `loaded` (it answers PING without LOADING: its data is in memory) and `cluster_ok`
(CLUSTER INFO says cluster_state:ok). Between the two, a restarted master waits on purpose: Redis keeps
cluster_state:fail for CLUSTER_WRITABLE_DELAY (2 s) after start so the cluster can reconfigure it first.
"""

from __future__ import annotations

import threading
import time

import redis

from clusterbak.redisops.connect import ConnectionOptions, make_client, split_address

POLL = 0.02


class ReadinessWatch:
    """Polls `addresses` from start() until every node is cluster_state:ok (or stop()); times are monotonic."""

    def __init__(self, conn: ConnectionOptions, addresses: list[str], timeout: float = 120.0) -> None:
        self._conn = conn
        self.addresses = list(addresses)
        self._timeout = timeout
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.loaded: dict[str, float] = {}
        self.cluster_ok: dict[str, float] = {}

    def all_(self, times: dict[str, float]) -> float | None:
        """When the last node got there (`loaded` or `cluster_ok`), None if one never did."""
        return max(times.values()) if times and len(times) == len(self.addresses) else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="readiness-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        deadline = time.monotonic() + self._timeout
        clients: dict[str, redis.Redis] = {}
        try:
            while not self._done.is_set() and time.monotonic() < deadline:
                for address in self.addresses:
                    if address not in self.cluster_ok:
                        self._poll(clients, address)
                if len(self.cluster_ok) == len(self.addresses):
                    return
                self._done.wait(POLL)
        finally:
            for client in clients.values():
                client.close()

    def _poll(self, clients: dict[str, redis.Redis], address: str) -> None:
        if address not in clients:
            host, port = split_address(address)
            clients[address] = make_client(self._conn, host, port, socket_timeout=1.0)
        client = clients[address]
        try:
            if address not in self.loaded:
                client.ping()
                self.loaded[address] = time.monotonic()
            if "cluster_state:ok" in client.execute_command("CLUSTER", "INFO"):
                self.cluster_ok[address] = time.monotonic()
        except (redis.RedisError, OSError):  # not up yet, or LOADING: poll again
            pass
