"""Which file goes where, and how each target node is stopped and started, for a restore. Pure."""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, field

from clusterbak.errors import InventoryError, UsageError
from clusterbak.model.inventory import Inventory
from clusterbak.model.nodesconf import NewAddress, NodesConfError, parse_new_address


@dataclass(frozen=True, slots=True)
class TargetState:
    """What the target address answered before the restore (reachable False: it is down, which is fine)."""

    address: str
    reachable: bool
    node_id: str | None = None
    dbsize: int = 0
    known_nodes: int = 0
    config: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeRestore:
    node_id: str
    role: str
    shard: int
    old_address: str
    new_address: str
    new_cport: int
    data_dir: str | None
    rdb_path: str | None
    nodes_conf_path: str | None
    aof_dir: str | None  # appendonly yes: the dump becomes the AOF base file in this dir (or an AOF set goes there)
    aof_base_name: str | None
    aof_filename: str | None
    nodes_conf_source: str
    rewrite_nodes_conf: bool
    dump_source: str
    dump_compression: str
    stop: str  # a shell command, or "SHUTDOWN NOSAVE" over Redis
    start: str | None
    replaces_keys: int
    refusal: str | None = None
    from_aof: bool = False  # the set holds this shard's AOF files, not a dump


@dataclass(frozen=True, slots=True)
class RestorePlan:
    backup_id: str
    nodes: tuple[NodeRestore, ...]
    refusals: tuple[str, ...]
    warnings: tuple[str, ...]
    steps: tuple[str, ...] = ("verify every file of the set", "stop every target node", "move existing files aside",
                              "place nodes.conf and dump of every node", "start every target node",
                              "prove: cluster_state ok, slots, roles, replicas in sync, key counts")

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def mapping(self) -> dict[str, NewAddress]:
        """node id -> its new address, for rewriting every node's nodes.conf alike."""
        out = {}
        for n in self.nodes:
            host, port = n.new_address.rsplit(":", 1)
            out[n.node_id] = NewAddress(host, int(port), n.new_cport)
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def shard_of(manifest: dict) -> dict[str, int]:
    shard_by_master = {s["master"]["id"]: s["index"] for s in manifest["shards"]}
    out = {}
    for n in manifest["topology"]["nodes"]:
        out[n["id"]] = shard_by_master.get(n["id"] if n["role"] == "master" else n["master_id"], -1)
    return out


def plan_restore(manifest: dict, inventory: Inventory, mapping: dict[str, NewAddress],
                 targets: dict[str, TargetState], force: bool = False) -> RestorePlan:
    refusals, warnings, nodes = [], [], []
    shard = shard_of(manifest)
    shards = {s["index"]: s for s in manifest["shards"]}
    confs = {n["id"]: n["nodes_conf"] for n in manifest["nodes"]}
    moved = any(new.address != old for old, new in mapping.items())
    for unknown in set(mapping) - {n["address"] for n in manifest["topology"]["nodes"]}:
        refusals.append(f"--map {unknown}=...: {unknown} is not a node of backup {manifest['backup_id']}")
    for node in manifest["topology"]["nodes"]:
        old = node["address"]
        new = mapping.get(old) or NewAddress(old.rsplit(":", 1)[0], int(old.rsplit(":", 1)[1]), int(old.rsplit(":", 1)[1]) + 10000)
        where = f"{old}" + (f" -> {new.address}" if new.address != old else "")
        if node["id"] not in confs:
            refusals.append(f"{where}: the backup has no nodes.conf for node {node['id'][:8]}; it cannot be restored")
            continue
        if shard[node["id"]] not in shards:
            refusals.append(f"{where}: node belongs to no shard of the backup (failed or empty master)")
            continue
        try:
            access = inventory.access(new.address)
        except InventoryError as exc:
            refusals.append(str(exc))
            continue
        target = targets.get(new.address) or TargetState(new.address, False)
        cfg = target.config or (manifest.get("config", {}).get(old, {}) if new.address == old else {})
        data_dir = access.data_dir or target.config.get("dir") or (cfg.get("dir") if new.address == old else None)
        refusal = None
        if not data_dir:
            refusal = f"{where}: data dir unknown (node down and no data_dir in the inventory)"
        conf_name = cfg.get("cluster-config-file") or "nodes.conf"
        dbfile = cfg.get("dbfilename") or "dump.rdb"
        if not cfg:
            warnings.append(f"{where}: target config unknown; assuming dbfilename dump.rdb and cluster-config-file nodes.conf")
        aof = (cfg.get("appendonly") == "yes")
        stop = access.command("stop_command", node["id"], data_dir or "") or (
            f"docker stop {access.container}" if access.transport == "docker" else "SHUTDOWN NOSAVE")
        start = access.command("start_command", node["id"], data_dir or "")
        if start is None and access.transport == "docker":
            start = f"docker start {access.container}"
        if start is None and refusal is None:
            refusal = f"{where}: no start_command in the inventory; clusterbak cannot bring the node back"
        if target.reachable and target.node_id != node["id"] and (target.dbsize or target.known_nodes > 1) and not force:
            refusal = (f"{where}: target is node {str(target.node_id)[:8]} of another cluster or holds "
                       f"{target.dbsize} keys; use --force to overwrite it")
        s = shards[shard[node["id"]]]
        if "aof" in s and not aof and refusal is None:
            refusal = (f"{where}: target has appendonly no, but this is an AOF set; set appendonly yes on the target "
                       "(it would ignore the AOF and load dump.rdb) or restore an RDB set")
        if refusal:
            refusals.append(refusal)
        join = posixpath.join
        nodes.append(NodeRestore(
            node_id=node["id"], role=node["role"], shard=s["index"], old_address=old, new_address=new.address,
            new_cport=new.cport, data_dir=data_dir,
            rdb_path=join(data_dir, dbfile) if data_dir else None,
            nodes_conf_path=(conf_name if conf_name.startswith("/") else join(data_dir, conf_name)) if data_dir else None,
            aof_dir=join(data_dir, cfg.get("appenddirname") or "appendonlydir") if aof and data_dir else None,
            aof_base_name=f"{cfg.get('appendfilename') or 'appendonly.aof'}.1.base.rdb" if aof else None,
            aof_filename=(cfg.get("appendfilename") or "appendonly.aof") if aof else None, from_aof="aof" in s,
            nodes_conf_source=confs[node["id"]]["path"], rewrite_nodes_conf=moved,
            dump_source=s["aof"]["folder"] if "aof" in s else s["file"]["path"],
            dump_compression="" if "aof" in s else s["file"]["compression"], stop=stop, start=start,
            replaces_keys=target.dbsize if target.reachable else 0, refusal=refusal))
    return RestorePlan(manifest["backup_id"], tuple(nodes), tuple(refusals), tuple(warnings))


def parse_maps(values: list[str]) -> dict[str, NewAddress]:
    """--map OLD=NEW[@CPORT] values -> old address -> new address; a malformed one is a usage error."""
    out = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep:
            raise UsageError(f"--map {value!r} is not OLD_ADDR=NEW_ADDR")
        try:
            out[old] = parse_new_address(new)
        except NodesConfError as exc:
            raise UsageError(f"--map {value!r}: {exc}") from exc
    return out
