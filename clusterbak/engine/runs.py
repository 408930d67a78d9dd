"""A mutating command's run: the cluster's run lock taken for it (redisops/runlock.py says where the lock lives).

The CLI says which command runs and against what; this module finds the nodes that carry the lock and holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from clusterbak.model.topology import Topology
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.discover import discover
from clusterbak.redisops.runlock import RunLock, cluster_run_lock, lock_addresses


def cluster_topology(conn: ConnectionOptions) -> Topology:
    """The cluster as its seed sees it now (CLUSTER NODES)."""
    return discover(conn)


@contextmanager
def locked_run(conn: ConnectionOptions, nodes: Topology | Iterable[str] | None, command: str,
               break_lock: bool = False, none_up_ok: bool = False) -> Iterator[RunLock]:
    """Hold the cluster's run lock for `command` on `nodes` (a topology: every member with an address; None: the
    cluster discovered from the seed now). Raises RunLockHeld (exit 3) naming the holder; `lock.broken` lists the
    stale locks --break-lock broke. none_up_ok: proceed when no node answers (a restore into a stopped cluster)."""
    if nodes is None:
        nodes = discover(conn)
    addresses = lock_addresses(nodes) if isinstance(nodes, Topology) else list(nodes)
    with cluster_run_lock(conn, addresses, command, break_lock, none_up_ok=none_up_ok) as lock:
        yield lock
