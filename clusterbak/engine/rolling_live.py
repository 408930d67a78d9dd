"""Who serves each shard, read from the live cluster at the moment it is reported.

Every statement a rolling restart prints about who serves a shard comes from here: CLUSTER NODES of every
reachable node, read when the statement is made. A shard is "served by X" only when every reachable node
agrees, X answers, calls itself master and nobody flags it failing, and no CLUSTER FAILOVER sent to one of
its nodes is still unanswered; otherwise it is UNCLEAR and the views observed are printed with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from clusterbak.plan.rolling import RollingPlan
from clusterbak.redisops.failover import Clients, Probe


@dataclass(frozen=True, slots=True)
class ShardServing:
    shard: int
    owner: str | None  # address; only when the views are clear
    owner_id: str | None
    summary: str  # one phrase for the operator: "served by X (6 of 6 nodes agree)" or "UNCLEAR: ..."
    views: tuple[tuple[str, str], ...]  # (observer, what it sees)

    @property
    def clear(self) -> bool:
        return self.owner is not None


def read_serving(clients: Clients, plan: RollingPlan, pending: frozenset[str] = frozenset()) -> dict[int, ShardServing]:
    everyone = tuple(r.address for r in plan.roles)
    return judge_serving(clients.probe_all(everyone), plan, pending)


def judge_serving(probes: Mapping[str, Probe], plan: RollingPlan,
                  pending: frozenset[str] = frozenset()) -> dict[int, ShardServing]:
    """Pure: each shard's owner from every probe's own CLUSTER NODES, or UNCLEAR with the views."""
    out = {}
    for shard in plan.shards:
        first = int(shard.slots[0].split("-")[0]) if shard.slots else None
        views: list[tuple[str, str]] = []
        owners: dict[tuple[str, str] | None, int] = {}
        flagged: set[str] = set()
        for address, p in probes.items():
            if not p.up or p.view is None:
                views.append((address, "unreachable"))
                continue
            owner = next((n for n in p.view.nodes if n.is_master and first is not None
                          and any(r.start <= first <= r.end for r in n.slots)), None)
            if owner is None:
                views.append((address, "no master"))
                owners[None] = owners.get(None, 0) + 1
                continue
            if owner.is_failing:
                flagged.add(owner.address)
            views.append((address, owner.address + (" (flagged failing)" if owner.is_failing else "")))
            owners[(owner.node_id, owner.address)] = owners.get((owner.node_id, owner.address), 0) + 1
        reachable = sum(owners.values())
        members = {r.address for r in plan.roles if r.shard == shard.index}
        why = []
        if not reachable:
            why.append("no node answers")
        elif len(owners) > 1:
            why.append("the nodes disagree")
        elif None in owners:
            why.append("no node serves its slots")
        else:
            ((node_id, address),) = [k for k in owners if k is not None]  # None is not among them (checked above)
            seen = probes.get(address)
            if seen is None or not seen.up:
                why.append(f"{address} is unreachable")
            elif seen.role != "master":
                why.append(f"{address} itself says it is a {seen.role}")
            if address in flagged:
                why.append(f"{address} is flagged failing")
        unanswered = sorted(a for a in pending & members if a in probes and not probes[a].up and not probes[a].refused)
        if unanswered:
            why.append(f"a CLUSTER FAILOVER sent to {', '.join(unanswered)} is unanswered and may still happen")
        down = sorted(a for a, v in views if v == "unreachable")
        if why:
            out[shard.index] = ShardServing(shard.index, None, None,
                                            f"UNCLEAR ({'; '.join(why)}); views: {_grouped(views)}", tuple(views))
        else:
            ((node_id, address),) = [k for k in owners if k is not None]
            note = f"; unreachable: {', '.join(down)}" if down else ""
            out[shard.index] = ShardServing(shard.index, address, node_id,
                                            f"served by {address} ({reachable} of {len(probes)} nodes agree{note})",
                                            tuple(views))
    return out


def _grouped(views: list[tuple[str, str]]) -> str:
    seen: dict[str, list[str]] = {}
    for observer, what in views:
        seen.setdefault(what, []).append(observer)
    return "; ".join(f"{what} per {', '.join(obs)}" if what != "unreachable" else f"unreachable: {', '.join(obs)}"
                     for what, obs in seen.items())


def serving_data(serving: Mapping[int, ShardServing]) -> tuple[dict, dict]:
    """The JSON forms: {shard: address or None}, {shard: summary}."""
    return ({str(k): v.owner for k, v in serving.items()}, {str(k): v.summary for k, v in serving.items()})
