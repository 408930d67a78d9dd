"""The in-sync replica rule, written once. Pure.

A replica may stand in for its master (take a backup's BGSAVE, take over in a failover) when its link to the master
is up, no full sync is running, and it trails the master by at most `max_lag` bytes. Both replication offsets must be
known: a lag that cannot be computed is not a small lag. Among the eligible replicas of a shard the least lagging
one is chosen (ties: the lowest address, so a plan is the same every time it is made).

Used by `check` (model/checks), backup's source choice (plan/backup), the rolling plan's failover target
(plan/rolling) and the live failover gate (redisops/failover), which adapts its probes to `ReplicaSync`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clusterbak.model.state import NodeState
from clusterbak.model.topology import Node, Shard


@dataclass(frozen=True, slots=True)
class ReplicaSync:
    """What a replica's INFO replication says about it, as far as standing in for its master goes."""

    address: str
    link: str | None  # master_link_status; None when not reported
    syncing: bool  # master_sync_in_progress
    offset: int | None  # slave_repl_offset; None when not reported


@dataclass(frozen=True, slots=True)
class Eligible:
    """A replica that may stand in for its master, and how many bytes it trails it by."""

    node: Node
    lag: int


def sync_refusal(replica: ReplicaSync, master_offset: int | None, max_lag: int,
                 offset_unknown_why: str = "the master reports none") -> str | None:
    """Why this replica is not in sync with its master (None when it is)."""
    addr = replica.address
    link = replica.link or "?"
    if link != "up":
        return f"{addr}: master link is {link} (master_link_status:{link})"
    if replica.syncing:
        return f"{addr}: full sync in progress (master_sync_in_progress:1)"
    if replica.offset is None:
        return f"{addr}: replication offset unknown (the replica reports no slave_repl_offset)"
    if master_offset is None:
        return f"{addr}: replication offset unknown ({offset_unknown_why})"
    lag = max(0, master_offset - replica.offset)
    if lag > max_lag:
        return f"{addr}: {lag} bytes behind its master (max {max_lag})"
    return None


def replica_sync(state: NodeState) -> ReplicaSync:
    """A probed node's INFO replication in the rule's terms."""
    link = state.info.get("master_link_status")
    return ReplicaSync(state.node.address, None if link is None else str(link),
                       bool(state.int_info("master_sync_in_progress")), state.repl_offset)


def replica_refusal(replica: NodeState | None, master: NodeState | None, max_lag: int) -> str | None:
    """Why this replica cannot stand in for its master (None when it can)."""
    if replica is None or not replica.reachable:
        return f"{replica.node.address if replica else 'replica'}: unreachable"
    if replica.node.is_failing:
        return f"{replica.node.address}: flagged failing"
    master_known = master is not None and master.reachable
    return sync_refusal(replica_sync(replica), master.repl_offset if master is not None else None, max_lag,
                        "the master reports none" if master_known else "master unreachable")


def eligible_replicas(shard: Shard, by_id: dict[str, NodeState], max_lag: int,
                      also: Callable[[NodeState | None], str | None] | None = None) -> tuple[list[Eligible], list[str]]:
    """The shard's replicas that may stand in for its master, least lagging first (ties: lowest address), and why
    each other replica may not. `also`: a further refusal of the caller's (e.g. backup --aof: appendonly yes)."""
    master = by_id.get(shard.master.node_id)
    master_offset = master.repl_offset if master is not None else None
    eligible: list[Eligible] = []
    reasons: list[str] = []
    for node in shard.replicas:
        state = by_id.get(node.node_id)
        reason = replica_refusal(state, master, max_lag) or (also(state) if also is not None else None)
        if reason is not None:
            reasons.append(reason)
        elif state is not None and state.repl_offset is not None and master_offset is not None:
            eligible.append(Eligible(node, max(0, master_offset - state.repl_offset)))
    eligible.sort(key=lambda e: (e.lag, e.node.address))
    return eligible, reasons
