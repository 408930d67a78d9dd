"""The wait for a restored cluster to serve (a drill's RTO ends there): a fine poll and one connection per node
for the whole wait (issue 14: the drill's time between "files placed" and "cluster proven")."""

from __future__ import annotations

import time

from clusterbak.redisops import health
from clusterbak.redisops.connect import ConnectionOptions


class FakeNode:
    def __init__(self, ready_at: float) -> None:
        self.ready_at = ready_at
        self.closed = False

    def execute_command(self, *args):
        return "cluster_state:ok" if time.monotonic() >= self.ready_at else "cluster_state:fail"

    def info(self, section):
        return {"role": "master"} if section == "replication" else {"loading": 0}

    def close(self) -> None:
        self.closed = True


def test_the_wait_sees_a_serving_cluster_within_a_poll_and_reuses_one_connection_per_node(monkeypatch):
    ready_at = time.monotonic() + 0.3
    opened: list[FakeNode] = []

    def client(conn, address):
        opened.append(FakeNode(ready_at))
        return opened[-1]

    monkeypatch.setattr(health, "_client", client)
    addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    assert health.wait_cluster_ok(ConnectionOptions(seed="127.0.0.1:1"), addresses, 5.0)
    late = time.monotonic() - ready_at
    assert late < 0.1, f"seen serving {late:.3f}s after it was"
    assert len(opened) == len(addresses)
    assert all(n.closed for n in opened)
