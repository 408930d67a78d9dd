"""The read-only look at a cluster that topology, check and every mutating command start from."""

from __future__ import annotations

from dataclasses import dataclass

from clusterbak.errors import InventoryError
from clusterbak.model.checks import CRITICAL, DEFAULT_MAX_LAG, Finding, cluster_findings, node_findings
from clusterbak.model.inventory import Inventory
from clusterbak.model.state import NodeState
from clusterbak.model.topology import Topology
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.discover import discover, probe_all


@dataclass(frozen=True, slots=True)
class Inspection:
    topology: Topology
    states: tuple[NodeState, ...]
    findings: tuple[Finding, ...]


def inspect(opts: ConnectionOptions, inventory: Inventory | None = None,
            max_lag: int = DEFAULT_MAX_LAG) -> Inspection:
    topology = discover(opts)
    states = probe_all(opts, topology)
    findings = cluster_findings(topology, states, max_lag)
    for state in states:
        override = False
        if inventory is not None:
            try:
                override = inventory.access(state.node.address).data_dir is not None
            except InventoryError:
                override = False
        findings.extend(node_findings(state, override))
    if inventory is not None:
        findings.extend(inventory_findings(topology, inventory))
    return Inspection(topology, states, tuple(findings))


def inventory_findings(topology: Topology, inventory: Inventory) -> list[Finding]:
    out = []
    for node in topology.nodes:
        try:
            inventory.access(node.address)
        except InventoryError as exc:
            out.append(Finding(CRITICAL, "inventory_missing_node", node.address, str(exc)))
    for address in inventory.unknown_addresses(topology):
        out.append(Finding("warning", "inventory_extra_node", address,
                           f"{inventory.source}: {address} is not a member of this cluster"))
    return out
