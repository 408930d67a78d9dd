"""Which node snapshots each shard, and which files come from which host. Pure."""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from clusterbak.errors import InventoryError
from clusterbak.model.gates import eligible_replicas
from clusterbak.model.inventory import Inventory, NodeAccess
from clusterbak.model.manifest import ShardHeader
from clusterbak.model.state import NodeState, states_by_id
from clusterbak.model.topology import Node, Shard, Topology


class Source(StrEnum):
    """--source: where each shard's snapshot is taken."""

    REPLICA = "replica"
    MASTER = "master"
    AUTO = "auto"


class Compress(StrEnum):
    """--compress: auto (per file: raw when its first MiB barely compresses, else zstd) | zstd | none."""

    AUTO = "auto"
    ZSTD = "zstd"
    NONE = "none"


class Via(StrEnum):
    """--via: how a replica's snapshot reaches us. transport: BGSAVE, then its file over the host's transport (SSH,
    Docker, local); sync: the replica streams a snapshot it forks for us over the replication protocol (PSYNC),
    straight into the set (no SSH for the data; nodes.conf still comes over the transport)."""

    TRANSPORT = "transport"
    SYNC = "sync"


SOURCES = tuple(s.value for s in Source)


@dataclass(frozen=True, slots=True)
class BackupRun:
    """How the plan is executed: every option of the run, printed with the plan by --dry-run."""

    dest: str
    parallel: int = 2  # shards in flight at once
    timeout: float = 600.0  # seconds to wait for each BGSAVE / BGREWRITEAOF
    compress: str = Compress.AUTO.value
    catch_up_timeout: float = 30.0  # seconds a source replica may take to reach its master's offset before its save
    relax_fsync: bool = False  # --aof: appendfsync no during the copy
    saves_per_host: int = 1  # saves at once on one host (fork memory)
    accept_new_host_keys: bool = False
    encrypted_to: tuple[str, ...] = ()  # age recipients every stored file is encrypted to
    signed: bool = False  # manifest.json signed (Ed25519)
    force: bool = False  # run despite the cluster gate
    via: str = Via.TRANSPORT.value  # how a replica's snapshot reaches us (a shard saved on its master: transport)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class NodePaths:
    data_dir: str | None
    rdb: str | None
    nodes_conf: str | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ShardPlan:
    index: int
    master_id: str
    master_address: str
    slots: tuple[str, ...]
    source_id: str | None
    source_address: str | None
    source_role: str | None
    host: str | None  # BGSAVEs are serialized per host
    rdb_path: str | None
    why: str
    refusal: str | None = None

    def header(self) -> ShardHeader:
        """The manifest's shard header (RDB and AOF alike) for this shard once it ran."""
        assert self.source_id and self.source_address, "the plan refuses a shard with no source"
        return ShardHeader(self.index, self.slots, self.master_id, self.master_address, self.source_id,
                           self.source_address, self.source_role, self.why)


@dataclass(frozen=True, slots=True)
class NodeFilePlan:
    node_id: str
    address: str
    role: str
    host: str
    nodes_conf_path: str | None
    refusal: str | None = None
    optional: bool = False  # a down node: try every candidate path; if none has it the set is marked incomplete
    alternatives: tuple[str, ...] = ()  # a down node: further places its nodes.conf may be, in order
    config_file: str | None = None  # its config file (inventory, else INFO server), collected beside nodes.conf
    aclfile: str | None = None  # its ACL file (CONFIG GET aclfile); None: its users are read with ACL LIST


@dataclass(frozen=True, slots=True)
class HostMemory:
    """What the plan assumes a host needs while its saves run: every node's used_memory there, plus the expected
    copy-on-write of as many concurrent saves as it allows (the largest estimates). A source's estimate is its own
    last save's rdb_last_cow_size, or its used_memory when it has none yet (every page written during the save)."""

    host: str
    saves: int  # saves at once on this host: min(--saves-per-host, its shards)
    used_memory: int  # summed over every reachable node on the host
    cow: int  # expected copy-on-write of `saves` concurrent saves
    total_system_memory: int | None  # as a node there reports it (None: unknown)
    cow_from: str  # "rdb_last_cow_size" | "used_memory (no save measured yet)" | a mix

    @property
    def assumed(self) -> int:
        return self.used_memory + self.cow


@dataclass(frozen=True, slots=True)
class BackupPlan:
    backup_id: str
    source_mode: str
    max_lag: int
    kind: str
    shards: tuple[ShardPlan, ...]
    node_files: tuple[NodeFilePlan, ...]
    refusals: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    saves_per_host: int = 1
    hosts: tuple[HostMemory, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.refusals

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for h, d in zip(self.hosts, out["hosts"], strict=True):
            d["assumed"] = h.assumed
        return out


def host_memory(shards: list[ShardPlan], topology: Topology, by_id: dict[str, NodeState],
                access: dict[str, NodeAccess], saves_per_host: int) -> tuple[HostMemory, ...]:
    """Per host with a save: the memory assumed during the backup (see HostMemory)."""
    nodes_on: dict[str, list[NodeState]] = {}
    for n in topology.nodes:
        if n.node_id in access and n.node_id in by_id and by_id[n.node_id].reachable:
            nodes_on.setdefault(host_of(access[n.node_id]), []).append(by_id[n.node_id])
    sources_on: dict[str, list[NodeState]] = {}
    for shard in shards:
        if shard.host and shard.source_id and shard.source_id in by_id:
            sources_on.setdefault(shard.host, []).append(by_id[shard.source_id])
    out: list[HostMemory] = []
    for host in sorted({s.host for s in shards if s.host}):
        on_host = nodes_on.get(host, [])
        estimates: list[tuple[int, str]] = []
        for state in sources_on.get(host, []):
            cow = state.int_info("rdb_last_cow_size")
            estimates.append((cow, "rdb_last_cow_size") if cow else
                             (state.int_info("used_memory") or 0, "used_memory (no save measured yet)"))
        saves = max(1, min(saves_per_host, len(estimates)))
        largest = sorted(estimates, reverse=True)[:saves]
        totals = [t for t in (st.int_info("total_system_memory") for st in on_host) if t]
        out.append(HostMemory(host, saves, sum(st.int_info("used_memory") or 0 for st in on_host),
                              sum(c for c, _ in largest), max(totals) if totals else None,
                              " + ".join(sorted({why for _, why in largest})) or "-"))
    return tuple(out)


def node_paths(state: NodeState | None, access: NodeAccess) -> NodePaths:
    cfg = state.config if state is not None and state.reachable else {}
    data_dir = access.data_dir or cfg.get("dir")
    if not data_dir:
        return NodePaths(None, None, None, f"{access.address}: data dir unknown (CONFIG GET unavailable); "
                                           "set data_dir for this node in the inventory")
    conf = cfg.get("cluster-config-file") or access.cluster_config_file or "nodes.conf"
    return NodePaths(data_dir, posixpath.join(data_dir, cfg.get("dbfilename") or "dump.rdb"),
                     conf if conf.startswith("/") else posixpath.join(data_dir, conf))


def down_node_conf_candidates(access: NodeAccess) -> tuple[str, ...]:
    """Where a down node's nodes.conf may be, in order: the inventory's cluster_config_file, nodes-<port>.conf,
    nodes.conf (the server cannot be asked for its cluster-config-file)."""
    if not access.data_dir:
        return (
            (access.cluster_config_file,)
            if access.cluster_config_file and access.cluster_config_file.startswith("/")
            else ()
        )
    names = [access.cluster_config_file, f"nodes-{access.port}.conf", "nodes.conf"]
    out: list[str] = []
    for name in names:
        if name:
            path = name if name.startswith("/") else posixpath.join(access.data_dir, name)
            if path not in out:
                out.append(path)
    return tuple(out)


def host_of(access: NodeAccess) -> str:
    if access.transport == "docker":
        return f"docker:{access.container}"
    return access.ssh_host or access.host if access.transport == "ssh" else access.host


def aof_refusal(state: NodeState | None) -> str | None:
    if state is None or not state.reachable:
        return None  # reported as unreachable elsewhere
    if state.config.get("appendonly") != "yes" and state.info.get("aof_enabled") not in (1, "1"):
        return f"{state.node.address}: appendonly is no (an AOF backup needs appendonly yes on the source)"
    return None


def choose_source(shard: Shard, by_id: dict[str, NodeState], mode: str, max_lag: int,
                  aof: bool = False) -> tuple[Node | None, str]:
    """(node, why) — node None means refused and why says why."""
    master_state = by_id.get(shard.master.node_id)
    if mode != "master":
        eligible, reasons = eligible_replicas(shard, by_id, max_lag, aof_refusal if aof else None)
        if eligible:
            best = eligible[0]
            return best.node, (f"in-sync replica, {best.lag} bytes behind its master "
                               f"(least lagging of {len(eligible)})")
        why = "no eligible replica: " + ("; ".join(reasons) if reasons else "the master has no replica")
        if mode == "replica":
            return None, why + " (--source auto would use the master)"
    if master_state is None or not master_state.reachable or shard.master.is_failing:
        return None, f"master {shard.master.address} is unreachable or failing"
    if aof and (master_refusal := aof_refusal(master_state)):
        return None, master_refusal
    return (
        shard.master,
        "master (--source master)" if mode == "master" else "master: no eligible replica (--source auto)",
    )


def plan_backup(backup_id: str, topology: Topology, states: tuple[NodeState, ...], inventory: Inventory,
                source_mode: str = "replica", max_lag: int = 1024 * 1024, aof: bool = False,
                saves_per_host: int = 1) -> BackupPlan:
    by_id = states_by_id(states)
    refusals: list[str] = []
    access: dict[str, NodeAccess] = {}
    for node in topology.nodes:
        try:
            access[node.node_id] = inventory.access(node.address)
        except InventoryError as exc:
            refusals.append(str(exc))
    shards = []
    for i, shard in enumerate(topology.shards):
        source, why = choose_source(shard, by_id, source_mode, max_lag, aof)
        refusal = None if source is not None else f"shard {i} (master {shard.master.address}): {why}"
        paths = (node_paths(by_id.get(source.node_id), access[source.node_id])
                 if source and source.node_id in access else None)
        if paths and paths.problem:
            refusal = f"shard {i}: {paths.problem}"
        if refusal:
            refusals.append(refusal)
        shards.append(ShardPlan(
            index=i, master_id=shard.master.node_id, master_address=shard.master.address,
            slots=tuple(str(r) for r in shard.slots), source_id=source.node_id if source else None,
            source_address=source.address if source else None, source_role=source.role if source else None,
            host=host_of(access[source.node_id]) if source and source.node_id in access else None,
            rdb_path=paths.rdb if paths else None, why=why, refusal=refusal))
    files, warnings = [], []
    for node in topology.nodes:
        if node.node_id not in access:
            continue
        state = by_id.get(node.node_id)
        down = node.is_failing or state is None or not state.reachable
        paths = node_paths(state, access[node.node_id])
        if down:
            warnings.append(f"{node.address}: node is down; its nodes.conf is collected only if its host still has it")
        elif paths.problem:
            refusals.append(paths.problem)
        if down or state is None:
            candidates = down_node_conf_candidates(access[node.node_id])
            files.append(NodeFilePlan(node.node_id, node.address, node.role, host_of(access[node.node_id]),
                                      candidates[0] if candidates else None, None, optional=True,
                                      alternatives=candidates[1:]))
        else:
            files.append(NodeFilePlan(node.node_id, node.address, node.role, host_of(access[node.node_id]),
                                      paths.nodes_conf, paths.problem,
                                      config_file=access[node.node_id].config_file or (
                                          str(state.info.get("config_file") or "") or None),
                                      aclfile=state.config.get("aclfile") or None))
    hosts = host_memory(shards, topology, by_id, access, saves_per_host)
    if saves_per_host > 1:
        for h in hosts:
            if h.saves > 1 and h.total_system_memory and h.assumed > h.total_system_memory:
                warnings.append(f"{h.host}: {h.saves} saves at once may need {h.assumed} bytes (used_memory "
                                f"{h.used_memory} + copy-on-write {h.cow}), more than its {h.total_system_memory} "
                                "bytes of memory; lower --saves-per-host")
    return BackupPlan(backup_id, source_mode, max_lag, "aof" if aof else "rdb", tuple(shards), tuple(files),
                      tuple(refusals), tuple(warnings), saves_per_host, hosts)
