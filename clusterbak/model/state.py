"""What one probe of a node saw: INFO, CLUSTER INFO, its own view of the topology, CONFIG; and what a restore's
target address answered (TargetState)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterbak.model.nodeconfig import ModuleLoaded
from clusterbak.model.topology import Node, Topology

CONFIG_KEYS = (
    "dir", "dbfilename", "cluster-config-file", "rdbchecksum", "stop-writes-on-bgsave-error",
    "appendonly", "appenddirname", "appendfilename", "save", "maxmemory", "appendfsync",
    "auto-aof-rewrite-percentage", "aclfile",
)


@dataclass(frozen=True, slots=True)
class NodeState:
    node: Node
    error: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    cluster_info: Mapping[str, str] = field(default_factory=dict)
    view: Topology | None = None
    dbsize: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)
    config_error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None

    def int_info(self, key: str, default: int = 0) -> int:
        try:
            return int(self.info.get(key, default))
        except (TypeError, ValueError):
            return default

    @property
    def repl_offset(self) -> int | None:
        """This node's replication offset: master_repl_offset on a master, slave_repl_offset on a replica."""
        if not self.reachable:
            return None
        key = "slave_repl_offset" if self.info.get("role") == "slave" else "master_repl_offset"
        return self.int_info(key) if key in self.info else None


def replica_lag(replica: NodeState, master: NodeState) -> int | None:
    """Bytes the replica is behind its master, from the two INFOs (never negative)."""
    if replica.repl_offset is None or master.repl_offset is None:
        return None
    return max(0, master.repl_offset - replica.repl_offset)


def states_by_id(states: Iterable[NodeState]) -> dict[str, NodeState]:
    return {s.node.node_id: s for s in states}


@dataclass(frozen=True, slots=True)
class TargetState:
    """What the target address answered before the restore (reachable False: it is down, which is fine)."""

    address: str
    reachable: bool
    node_id: str | None = None
    dbsize: int = 0
    known_nodes: int = 0
    config: dict[str, str] = field(default_factory=dict)
    server: str | None = None  # "redis 7.0.15" / "valkey 8.1.1" from INFO server (model.versions)
    config_file: str | None = None  # INFO server config_file
    config_text: str | None = None  # its current content (for the --with-config diff; never printed unmasked)
    modules: tuple[ModuleLoaded, ...] | None = None  # MODULE LIST (None: down or refused)
