"""The transport pool the backup engine is handed: one shared transport per way in, fresh ones on request."""

from __future__ import annotations

from clusterbak.transports.pool import TransportPool
from tests.unit.test_plan_rolling import inventory, topo


def test_nodes_on_one_way_in_share_a_transport_and_fresh_ones_are_new():
    t = topo("nodes_3x1.txt")
    a, b = t.nodes[0].address, t.nodes[1].address
    with TransportPool(inventory(t)) as pool:
        shared = pool.get(a)
        assert pool.get(b) is shared and pool.key_of(a) == pool.key_of(b) == ("local",)
        own = pool.fresh(a)
        assert own is not shared
        own.close()


def test_different_ways_in_open_at_once_and_one_way_in_opens_once(monkeypatch):
    """Issue 14: SSH connections to every host open at once (a handshake to one host never waits for another's)."""
    import threading
    import time
    from dataclasses import replace

    from clusterbak.transports import pool as pool_module

    opened: list[tuple] = []

    class Slow:
        def close(self) -> None:
            pass

    def slow_open(access, accept):
        opened.append((access.ssh_host, time.monotonic()))
        time.sleep(0.3)
        return Slow()

    monkeypatch.setattr(pool_module, "open_transport", slow_open)
    t = topo("nodes_3x1.txt")
    inv = inventory(t, transport="ssh")
    inv = replace(inv, nodes=tuple(replace(n, ssh_host=f"10.0.0.{i % 3}") for i, n in enumerate(inv.nodes)))
    with TransportPool(inv) as pool:
        got: list = []
        threads = [threading.Thread(target=lambda a=n.address: got.append(pool.get(a))) for n in t.nodes]
        t0 = time.monotonic()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.monotonic() - t0
    assert sorted(h for h, _ in opened) == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]  # 6 nodes, 3 hosts: 3 opens
    assert elapsed < 0.55, f"3 hosts took {elapsed:.2f}s: opened one after another"
    assert len({id(x) for x in got}) == 3
