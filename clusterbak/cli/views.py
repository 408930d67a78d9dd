"""Snapshots -> JSON-able dicts for the renderer and the --json envelope. Pure."""

from __future__ import annotations

from dataclasses import asdict

from clusterbak.model.checks import Finding
from clusterbak.model.state import NodeState, replica_lag, states_by_id
from clusterbak.model.topology import Node, Topology


def node_view(node: Node, state: NodeState | None = None, master_state: NodeState | None = None) -> dict:
    view = {
        "id": node.node_id, "address": node.address, "hostname": node.hostname or None, "role": node.role,
        "master_id": node.master_id, "flags": sorted(node.flags), "config_epoch": node.config_epoch,
        "link_state": node.link_state, "slots": [str(r) for r in node.slots],
        "open_slots": [asdict(s) for s in node.open_slots], "failing": node.is_failing,
    }
    if state is not None:
        view["error"] = state.error
        if state.reachable:
            view.update(repl_offset=state.repl_offset, used_memory=state.int_info("used_memory"),
                        used_memory_human=state.info.get("used_memory_human"), keys=state.dbsize,
                        redis_version=state.info.get("redis_version"), run_id=state.info.get("run_id"))
            if node.is_replica and master_state is not None:
                view["lag_bytes"] = replica_lag(state, master_state)
                view["master_link_status"] = state.info.get("master_link_status")
    return view


def topology_view(seed: str, topology: Topology, states: tuple[NodeState, ...] = ()) -> dict:
    by_id = states_by_id(states)
    seed_state = next((s for s in states if s.node.address == seed), None)
    shards = []
    for i, shard in enumerate(topology.shards):
        master_state = by_id.get(shard.master.node_id)
        nodes = [node_view(n, by_id.get(n.node_id) if by_id else None, master_state) for n in shard.nodes]
        shards.append({"index": i, "master_id": shard.master.node_id, "slots": [str(r) for r in shard.slots],
                       "slot_count": shard.master.slot_count, "nodes": nodes})
    return {
        "seed": seed,
        "cluster_state": seed_state.cluster_info.get("cluster_state") if seed_state else None,
        "shards": shards,
        "nodes": [node_view(n, by_id.get(n.node_id) if by_id else None) for n in topology.nodes],
        "uncovered_slots": [str(r) for r in topology.uncovered_slots()],
    }


def finding_view(finding: Finding) -> dict:
    return asdict(finding)
