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
